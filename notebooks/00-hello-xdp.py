# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 0 · Hello XDP: count packets per IP protocol
#
# In this notebook you load your first XDP program into the kernel, attach it to a real network
# interface, send it traffic and read what it counted. Every later lab builds on these steps:
#
# 1. look at the program and compile it with BCC, which the kernel's **verifier** then checks;
# 2. build a small network of two namespaces joined by a veth pair, and attach the program;
# 3. ping through it and read the counters it keeps in a **map**;
# 4. run a single hand-made frame through it with **BPF_PROG_TEST_RUN**, no network needed;
# 5. watch the verifier reject a program that reads the packet without a bounds check.
#
# ## What XDP is, and where it sits
#
# XDP (eXpress Data Path) is a hook for BPF programs at the very start of the receive path, inside
# the network driver. The program sees each frame as raw bytes **before** the kernel has allocated
# anything for it (no `sk_buff` yet), and returns a verdict that decides the frame's fate:
#
# ```text
#  wire ─► NIC ─► driver ─► [ XDP program ] ─► sk_buff ─► tc ingress ─► netfilter ─► IP stack ─► sockets
#                                │
#                                ├─ XDP_PASS      carry on up the stack, as if nothing happened
#                                ├─ XDP_DROP      drop it here: the cheapest drop Linux has
#                                ├─ XDP_TX        send it back out of the interface it came in on
#                                ├─ XDP_REDIRECT  send it to another interface, CPU or socket
#                                └─ XDP_ABORTED   drop it and flag a program error
# ```
#
# Lab 0's program is the gentlest possible one: it reads the IP protocol number of every frame,
# adds one to that protocol's counter, and always returns `XDP_PASS`. Traffic flows as before;
# we only get to watch it.

# %% [markdown]
# ## Setup
#
# Everything runs as root (loading BPF programs and creating namespaces needs it). The course's
# runtime, `bpflab`, lives in the project folder, the parent of `notebooks/`; the project's venv
# has it on its import path.

# %%
import subprocess

import matplotlib.pyplot as plt
from IPython.display import Code, display
from scapy.packet import raw

from bpflab import packets, testrun
from bpflab.attach import attach
from bpflab.course.labs import BPF_INCLUDE, load_lab
from bpflab.programs import XDP_VERDICTS, load, verifier_says
from bpflab.topology import Topology, run_in

# %% [markdown]
# ## 1 · The program
#
# The lab's manifest names the program file, its entry function and its hook. `lab.source()` is
# your copy `labs/hello-xdp/hello_xdp.c` when it exists, else the reference solution.

# %%
lab = load_lab("hello-xdp")
source = lab.source()
print(f"{lab.title}\nfile: {source.name}, entry: {lab.entry}(), hook: {lab.hook}")
display(Code(source.read_text(), language="c"))

# %% [markdown]
# A few things to notice:
#
# - `BPF_PERCPU_ARRAY(proto_count, __u64, 256)` declares the **map**: 256 counters, one per IP
#   protocol number, shared between the program in the kernel and us in user space. Per-CPU means
#   every CPU has its own copy of each counter, so CPUs never race each other; we add them up.
# - The entry function gets a `struct xdp_md *ctx` whose `data` and `data_end` fields delimit the
#   frame. Every read of packet memory must be preceded by a check that it stays before
#   `data_end`, or the verifier refuses the program (you will see that happen in step 8).
# - The parsing helpers come from `parsing.h`, shared by every lab. Each one does that bounds
#   check and returns `NULL` when the frame is too short:

# %%
display(Code((BPF_INCLUDE / "parsing.h").read_text(), language="c"))

# %% [markdown]
# ## 2 · Compile and load
#
# `load()` hands the C file to BCC, which compiles it with clang into BPF bytecode, creates the
# map, and asks the kernel to load the entry function. The kernel's **verifier** walks every path
# through the bytecode and proves it safe (no out-of-bounds reads, no NULL dereferences, it always
# terminates) before JIT-compiling it to machine code. Compiling takes a few seconds.

# %%
program = load(source, lab.entry, lab.hook)
print(program.loaded())

# %% [markdown]
# ## 3 · A network of our own
#
# `Topology` creates two network namespaces, *client* and *server*, each with its own interfaces,
# addresses and routing, joined by a veth pair: a virtual cable, whatever goes in one end comes
# out of the other.
#
# ```text
#   ┌──── client netns ────┐               ┌──── server netns ────┐
#   │  192.0.2.1           │     veth      │  192.0.2.2           │
#   │  2001:db8::1   [veth]├───────────────┤[veth] ◄── hello_xdp  │
#   └──────────────────────┘               └──────────────────────┘
# ```
#
# Usually you would write `with Topology() as topo:` so that it is always removed. A notebook
# spreads the work over many cells, so here we enter it by hand and close it in the last cell.

# %%
if (previous := globals().get("topo")) is not None:  # run again: remove the last one first
    previous.close()
topo = Topology().start()  # what `with Topology() as topo:` does on the way in
for role, side in (("client", topo.client), ("server", topo.server)):
    print(f"{role}: netns {side.netns}, {side.ifname}, {side.ipv4}, {side.ipv6}, MAC {side.mac}")

# %% [markdown]
# ## 4 · Attach to the server's veth
#
# `attach()` puts the program on the server's interface and returns the mode it runs in.
# **native** means it runs inside the driver (veth supports this); **generic** would mean a slower
# fall-back that runs after the `sk_buff` is built. `ip link` shows `xdp` (native) or
# `xdpgeneric` in the flags, and the program's id and name on the `prog/xdp` line.

# %%
mode = attach(program, topo.server.netns, topo.server.ifname)
print(f"{program.name} attached to {topo.server.ifname} in {mode} mode\n")
print(run_in(topo.server.netns, ["ip", "-d", "link", "show", topo.server.ifname]).stdout)

# %% [markdown]
# ### Why the client's veth carries an XDP program too
#
# Look at the client's end of the cable: it runs a tiny program, `peer_pass`, that returns
# `XDP_PASS` and nothing else.

# %%
print(run_in(topo.client.netns, ["ip", "link", "show", topo.client.ifname]).stdout)

# %% [markdown]
# That is the **veth XDP_TX trap**: a frame that an XDP program sends back with `XDP_TX` reaches
# the other end of a veth pair only if that end has an XDP program of its own. Without one the
# sender counts the frame as sent and it silently vanishes. Lab 0 never uses `XDP_TX`, but lab 1
# does, so `Topology` always sets this up. You will see the trap for yourself in lab 1.

# %% [markdown]
# ## 5 · Ping through it
#
# The client pings the server over IPv4 and IPv6. Every echo request crosses the server's veth,
# so `hello_xdp` counts it, passes it, and the server's kernel answers as usual.

# %%
ping4 = topo.ping(count=5)
ping6 = topo.ping(count=5, ipv6=True)
print(f"IPv4: {ping4.received} of {ping4.sent} pings answered")
print(f"IPv6: {ping6.received} of {ping6.sent} pings answered\n")
print(ping4.output)

# %% [markdown]
# ## 6 · Read the counters
#
# From user space, `program.table("proto_count")` is the map. Because it is a per-CPU array,
# reading one key gives a list with one value per CPU. Here is the ICMP counter (key 1):

# %%
print("ICMP counter, one value per CPU:", list(program.table("proto_count")[1]))

# %% [markdown]
# **Your turn.** Write `read_counts(program)`: it returns `{protocol number: packets}` for every
# counter that is not zero, each summed across the CPUs. The table's `.items()` yields pairs of
# (key, per-CPU values); the key is a ctypes integer, so use `key.value` for the Python `int`.

# %% tags=["solution"]
# Write read_counts(program): the non-zero counters of proto_count, each summed across CPUs
def read_counts(program) -> dict[int, int]:
    """The non-zero counters of proto_count, summed across CPUs: {protocol number: packets}."""
    counts = {}
    for key, per_cpu in program.table("proto_count").items():
        total = sum(per_cpu)
        if total:
            counts[key.value] = total
    return counts


# %%
PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}

counts = read_counts(program)
for proto, count in sorted(counts.items()):
    print(f"protocol {proto:3} {PROTOCOLS.get(proto, 'other'):8} {count} packets")

# %% [markdown]
# The pings show up under 1 (ICMP) and 58 (ICMPv6). ICMPv6 may count a little more than the
# pings: the client's IPv6 stack sends a few messages of its own when its interface comes up
# (multicast listener reports). Some of those start with IPv6's Hop-by-Hop options header, and
# land under protocol 0: the program counts the first `nexthdr` and does not follow extension
# headers.
#
# The same numbers as a chart: one bar per protocol, its height the packets your program
# counted for it (protocols it has no name for, 0 among them, under "other"):

# %%
by_name = dict.fromkeys([*PROTOCOLS.values(), "other"], 0)
for proto, count in counts.items():
    by_name[PROTOCOLS.get(proto, "other")] += count

fig, ax = plt.subplots(figsize=(6, 3))
bars = ax.bar(list(by_name), list(by_name.values()), color="tab:blue")
ax.bar_label(bars)
ax.margins(y=0.2)  # room for the labels
ax.set_ylabel("packets")
ax.set_title(f"Packets counted by {program.name} on {topo.server.ifname}")
plt.show()

# %% [markdown]
# ## 7 · One frame, no network: BPF_PROG_TEST_RUN
#
# The kernel can run a loaded program on a buffer we hand it, without any interface:
# `testrun.run(fd, frame)` returns the verdict and the frame as the program left it. This is how
# the grader checks your program frame by frame. The program uses the same map whether it runs on
# the veth or in a test run, so the counters move here too.
#
# `packets` builds frames with scapy; `raw()` turns them into bytes.

# %%
def run_one(frame: bytes) -> None:
    """Test-run one frame through the program; show the verdict and what the counters did."""
    before = read_counts(program)
    result = testrun.run(program.fd, frame)
    after = read_counts(program)
    changed = {p: after.get(p, 0) - before.get(p, 0) for p in after if after.get(p, 0) != before.get(p, 0)}
    print(f"frame:    {packets.describe(frame)}")
    print(f"verdict:  {XDP_VERDICTS.get(result.verdict, result.verdict)}")
    print(f"frame left unchanged: {result.packet == frame}")
    print(f"counters changed by:  {changed or 'nothing'}\n")


run_one(raw(packets.udp_v4()))  # a UDP datagram: counted under 17
run_one(raw(packets.arp_request()))  # ARP is not IP: passed, not counted

# %% [markdown]
# Try it with your own frames: `packets.tcp_v4()`, `packets.icmp_echo_v6()`, or a truncated one
# such as `raw(packets.icmp_echo_v4())[:20]` (an Ethernet header and 6 bytes of IPv4: too short
# to count, and it must still be passed).

# %% [markdown]
# ## 8 · The verifier says no
#
# Below is a tiny XDP program that reads the frame's EtherType straight away, **without** checking
# that the frame is at least 14 bytes long. Such a read could run past the end of the packet, so
# the verifier rejects the program at load time, before it can ever run. `load()` turns the
# verifier's long log into a `ProgramError` whose `explain()` gives the lines that matter and a
# hint (the full log is in `err.log`).

# %%
BROKEN = """\
#include "parsing.h"

int broken(struct xdp_md *ctx)
{
    struct ethhdr *eth = (void *)(long)ctx->data;

    /* BOUNDS CHECK MISSING */
    if (eth->h_proto == bpf_htons(ETH_P_IP))
        return XDP_DROP;
    return XDP_PASS;
}
"""


print(verifier_says(BROKEN, "broken", "xdp", "broken.c"))

# %% [markdown]
# The verifier tracks `eth` as a packet pointer with a known safe range of 0 bytes (`r=0`): nothing
# has been checked yet, so reading 1 byte at offset 12 is "outside of the packet". Add the check
# that `parse_ethhdr()` does for you, and the same program loads:

# %%
CHECK = """\
    if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
        return XDP_PASS;"""
print(verifier_says(BROKEN.replace("    /* BOUNDS CHECK MISSING */", CHECK), "broken", "xdp", "broken.c"))

# %% [markdown]
# ## 9 · Clean up
#
# `program.close()` detaches the program and frees it (and its map); `topo.close()` deletes both
# namespaces, and with them the veth pair and the client's `peer_pass` program. Nothing is left.

# %%
program.close()
topo.close()
left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
ours = [name for name in (topo.client.netns, topo.server.netns) if name in left]
print("namespaces left behind:", ours or "none")

# %% [markdown]
# ## What you learned
#
# - XDP runs a BPF program in the driver, on raw frames, before the kernel builds an `sk_buff`;
#   its verdict (`XDP_PASS`, `XDP_DROP`, `XDP_TX`, ...) decides what happens to the frame.
# - BCC compiles the C source, and the kernel's verifier must accept it before it loads: every
#   packet read needs a bounds check against `data_end`, every map lookup a NULL check.
# - Maps are how a program and user space share data; a per-CPU array needs summing across CPUs.
# - Network namespaces and a veth pair give you a private, disposable network to test on, where
#   the program runs in native mode.
# - `BPF_PROG_TEST_RUN` runs one crafted frame through a program, without any network: that is
#   how the grader tests your work.
#
# Now write your own: the lab's handout is `labs/hello-xdp/README.md`, and
# `make check LAB=hello-xdp` grades it.
#
# ## Next: lab 1, an ICMP echo server at XDP
#
# Instead of passing pings to the kernel, your program will answer them itself: swap the
# addresses, turn the echo request into a reply, fix the checksum, and send it straight back
# out with `XDP_TX`, where you will meet the veth trap from step 4.
