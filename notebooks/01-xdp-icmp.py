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
# # Lab 1 · A ping server at XDP
#
# In lab 0 your program watched the traffic go by. Now it answers: when an ICMP echo request
# (a ping) arrives for the server, your XDP program turns the very frame it received into the
# echo reply and sends it straight back out with `XDP_TX`. The server's kernel never sees the
# ping at all. This notebook walks through it:
#
# 1. what a ping looks like on the wire, and what the reply must change;
# 2. the verifier again, this time one header further in;
# 3. your program on single frames, with **BPF_PROG_TEST_RUN**;
# 4. your program on a real veth, answering real `ping`s with the kernel's own echo turned off;
# 5. who answered: what `tcpdump` and the kernel's counters see (and don't);
# 6. the **veth XDP_TX trap** from lab 0, for real this time;
# 7. what answering costs, measured properly.
#
# ```text
#  client netns                               server netns
#  ping ──► echo request ──────── veth ──────► [ xdp_icmp_echo ] ──► XDP_PASS ──► kernel
#                                                    │              (everything else)
#  ping ◄── echo reply   ◄──────────────────────────┘ XDP_TX: the same frame, rewritten
# ```
#
# The notebook works on your `labs/xdp-icmp/xdp_icmp_echo.c`. With the starter as it is, every
# cell runs, but nothing gets answered: the starter passes every frame to the kernel.

# %% [markdown]
# ## Setup
#
# Everything runs as root, as in lab 0.

# %%
import subprocess

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Code, display
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import raw
from scapy.utils import hexdump

from bpflab import measure, packets, testrun
from bpflab.attach import attach
from bpflab.course.labs import load_lab
from bpflab.oracles import echo
from bpflab.programs import XDP_VERDICTS, load, verifier_says
from bpflab.tcpdump import Tcpdump
from bpflab.topology import Topology, run_in

# %% [markdown]
# ## 1 · What a ping looks like
#
# `ping` sends an ICMP **echo request** and waits for the **echo reply**. Over IPv4 the frame is
# an Ethernet header, a 20-byte IPv4 header and an 8-byte ICMP header, then the payload (ping
# puts a timestamp and a counting pattern there). The byte offsets matter: they are where your
# program reads and writes.
#
# ```text
#  Ethernet  0-5 destination MAC · 6-11 source MAC · 12-13 EtherType 0x0800
#  IPv4      14 version 4, header length 5 (x 4 bytes) · 16-17 total length · 20-21 flags, fragment
#            22 TTL · 23 protocol 1 (ICMP) · 24-25 header checksum · 26-29 source · 30-33 destination
#  ICMP      34 type 8 (echo request) · 35 code 0 · 36-37 checksum · 38-39 identifier · 40-41 sequence
#  payload   42 ... whatever the client sent; the reply must carry it back unchanged
# ```
#
# Over IPv6 the IP header is 40 bytes long and has no checksum of its own:
#
# ```text
#  Ethernet  12-13 EtherType 0x86DD
#  IPv6      14 version 6 · 18-19 payload length · 20 next header 58 (ICMPv6) · 21 hop limit
#            22-37 source · 38-53 destination
#  ICMPv6    54 type 128 (echo request) · 55 code 0 · 56-57 checksum · 58-59 identifier · 60-61 sequence
# ```
#
# `packets.icmp_echo_v4()` builds such a request with scapy, from the client (192.0.2.1) to the
# server (192.0.2.2). Here it is, decoded and as bytes:

# %%
request = packets.icmp_echo_v4()
Ether(raw(request)).show()  # decoded from the bytes, so the checksums are filled in
hexdump(request)

# %% [markdown]
# What must the reply change? `echo.expected_reply()` is the course's oracle: the exact reply a
# correct server sends for a frame (or `None` when it must not answer). The grader compares your
# program with it. Let us ask it, for a request that crossed a few routers on its way (its TTL
# is down to 57), and list every header field that differs between request and reply:

# %%
def changes(request: bytes, reply: bytes) -> None:
    """Print every field, layer by layer, that differs between a request and its reply."""
    for asked, answered in zip(Ether(request).iterpayloads(), Ether(reply).iterpayloads(), strict=False):
        for field in asked.fields_desc:
            before, after = asked.getfieldval(field.name), answered.getfieldval(field.name)
            if before != after:
                layer = f"{type(asked).__name__}.{field.name}"
                print(f"  {layer:24} {field.i2repr(asked, before):>24} → {field.i2repr(answered, after)}")


SERVER_IPV4, SERVER_IPV6 = packets.SERVER_IPV4, packets.SERVER_IPV6
for name, frame in (("IPv4", packets.icmp_echo_v4()), ("IPv6", packets.icmp_echo_v6())):
    if IP in frame:
        frame[IP].ttl = 57
    else:
        frame[IPv6].hlim = 57
    request_bytes = raw(frame)
    print(f"{name}: {packets.describe(request_bytes)}")
    changes(request_bytes, echo.expected_reply(request_bytes, SERVER_IPV4, SERVER_IPV6))

# %% [markdown]
# Everything else stays as it is: identifier, sequence and payload (that is how `ping` matches a
# reply to its request), the lengths, the IP identification. So the reply can be made **in
# place**, in the buffer the request arrived in, by changing a handful of bytes:
#
# - **MACs swapped**: the reply goes back to whoever sent the request.
# - **IP addresses swapped**: from the server, to the client.
# - **TTL (hop limit) reset to 64**: the reply is a fresh packet, it starts with a full TTL.
# - **Type**: 8 becomes 0 (IPv4); 128 becomes 129 (IPv6).
# - **Checksums**, where a covered byte changed. Look at which ones moved:
#   - The IPv4 header checksum covers the IPv4 header only. Swapping the two addresses does not
#     change the one's-complement **sum** of its 16-bit words (the same words, in another
#     order), so only the TTL changes it. Here the TTL went from 57 to 64; a request that
#     arrives with TTL 64 (like the client's pings in this notebook, which cross no router)
#     leaves the IP checksum unchanged, but your program must not count on that.
#   - The ICMP checksum covers the ICMP message: only the type changed there.
#   - IPv6 has no header checksum, so its hop limit is free to change. The ICMPv6 checksum
#     covers a *pseudo-header* too (the two addresses, the length, next header 58): the swap
#     leaves its sum unchanged as well, and again only the type moves the checksum.
#
# Recomputing a checksum from scratch would mean summing the whole message again. RFC 1624
# gives the new checksum from the old one and the one 16-bit word that changed; that is
# `csum_replace16()` in `bpf/include/checksum.h`.

# %% [markdown]
# ## 2 · The verifier, one header further
#
# In lab 0 you saw the verifier refuse a read of the Ethernet header without a bounds check.
# Here is the same mistake one header later: a program that parses Ethernet and IPv4 properly,
# then reads the ICMP type at the end of the IP header without checking that it is there.

# %%
BROKEN = """\
#include "parsing.h"

int broken(struct xdp_md *ctx)
{
    struct cursor cur = cursor_start(ctx);
    struct ethhdr *eth = parse_ethhdr(&cur);
    struct iphdr *ip;
    struct icmphdr *msg;

    if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    ip = parse_iphdr(&cur);
    if (!ip || ip->protocol != IPPROTO_ICMP)
        return XDP_PASS;
    msg = cur.pos; /* BOUNDS CHECK MISSING */
    if (msg->type == ICMP_ECHO)
        return XDP_DROP;
    return XDP_PASS;
}
"""


print(verifier_says(BROKEN, "broken", "xdp", "broken.c"))

# %% [markdown]
# Read the complaint as the verifier's bookkeeping. The register holding `msg` is a packet
# pointer at a **variable** offset (the IPv4 header can be 20 to 60 bytes long, `ihl` x 4), and
# `parse_iphdr()` checked the packet up to exactly where that pointer points: the safe range
# `r=14` equals its own offset `off=14` (the Ethernet header; the variable IP header length
# comes on top). Not one byte past it has been checked, so reading the 1-byte type there is
# "outside of the packet". The verifier does not care that real pings always carry an ICMP
# header: a 34-byte frame that ends right after the IP header is legal, and the program must
# be safe on it too.
#
# `parse_icmphdr()` does the missing check (8 bytes, before handing the pointer out), and the
# program loads:

# %%
FIXED = """\
    msg = parse_icmphdr(&cur);
    if (!msg)
        return XDP_PASS;"""
CHECKED = BROKEN.replace("    msg = cur.pos; /* BOUNDS CHECK MISSING */", FIXED)
print(verifier_says(CHECKED, "broken", "xdp", "broken.c"))

# %% [markdown]
# Your echo server goes further still: it sums the **whole** ICMP message, payload included, to
# verify its checksum: a loop over packet bytes whose length comes from the packet itself.
#
# The verifier proves such a loop once for every length the message may have. Written the
# obvious way (one loop over the 16-bit words, a `word + 1 > end` check before each read), it
# verifies or not depending on the compiler: each check teaches the verifier that the packet is
# *that* long, and a path proven for 1000 bytes is no proof for one of 998, so it can reuse
# finished work only if the short lengths come first. Debian 12's clang 14 happens to lay the
# loop out that way; Debian 13's clang 19 lays it out the other way round, and the very same
# source is rejected: "The sequence of 8193 jumps is too complex".
#
# `csum_add_xdp(ctx, start, len, &sum)` in `checksum.h` sidesteps the trap: it reads the
# message 64 bytes at a time, one bounds check per chunk, so at most 23 turns are left to prove
# whatever shape clang picks, and the helper `bpf_xdp_load_bytes()` copies out the last partial
# chunk, checking its bounds at run time, so that its length is one case for the verifier, not
# 63. Use it rather than writing your own (and `csum_add_bytes()` for short stretches such as a
# header). Loops you write yourself: keep the number of turns the verifier must prove small,
# and let helpers do what would multiply them.

# %% [markdown]
# ## 3 · Your program, one frame at a time
#
# Load your program (the first compile takes a few seconds):

# %%
lab = load_lab("xdp-icmp")
source = lab.source()
print(f"{lab.title}\nfile: {source.name}, entry: {lab.entry}(), hook: {lab.hook}")
display(Code(source.read_text(), language="c"))
program = load(source, lab.entry, lab.hook)
print(program.loaded())

# %% [markdown]
# The program does not know its own addresses: the loader puts them in the `server` map before
# the first packet arrives, with `echo.configure()`. The same compiled program can then serve
# any address. These are the addresses the topology of step 4 gives the server.

# %%
echo.configure(program, SERVER_IPV4, SERVER_IPV6)
server_map = program.table("server")
print("server map, key 0:", bytes(server_map[server_map.Key(0)]).hex(" ", 4))
print(f"that is {SERVER_IPV4} (c0000202), then {SERVER_IPV6}, in network byte order")

# %% [markdown]
# Now one echo request through `BPF_PROG_TEST_RUN`, exactly as the grader's unit tests do it:
# the kernel runs the program on a copy of the frame and gives back the verdict and the frame
# as the program left it. We compare that with the oracle's reply. (`echo.same_reply()` also
# accepts a checksum written as 0xffff where the oracle wrote 0x0000: both mean zero in one's
# complement, and an incremental update can produce either.)

# %%
request_bytes = raw(packets.icmp_echo_v4())
expected = echo.expected_reply(request_bytes, SERVER_IPV4, SERVER_IPV6)
result = testrun.run(program.fd, request_bytes)
print(f"sent:      {packets.describe(request_bytes)}")
print(f"verdict:   {XDP_VERDICTS.get(result.verdict, result.verdict)}")
print(f"came back: {packets.describe(result.packet)}")
print(f"the expected reply, byte for byte: {echo.same_reply(result.packet, expected)}\n")
Ether(result.packet).show()

# %% [markdown]
# With a working program the verdict is `XDP_TX` and the frame that came back is the reply:
# addresses swapped, `echo-reply`, the same id, sequence and payload. With the starter it is
# `XDP_PASS` and the request comes back as it went in.
#
# A server has to be right about what it does **not** answer, too. Here is a small version of
# the grader's unit layer: a few frames, what the oracle says should happen, and what your
# program did.

# %%
CASES = {
    "an ICMPv4 echo request": raw(packets.icmp_echo_v4()),
    "an ICMPv6 echo request": raw(packets.icmp_echo_v6()),
    "a full-size (1500-byte MTU) echo request": raw(packets.icmp_echo_v4(1472)),
    "an echo request with a wrong ICMP checksum": packets.damaged(packets.icmp_echo_v4(), ICMP, "chksum"),
    "an echo request with a wrong IP checksum": packets.damaged(packets.icmp_echo_v4(), IP, "chksum"),
    "an echo request for another address": raw(packets.icmp_echo_v4()).replace(
        bytes([192, 0, 2, 2]), bytes([192, 0, 2, 99])),
    "an echo request cut short by 10 bytes": raw(packets.icmp_echo_v4())[:-10],
    "a UDP datagram": raw(packets.udp_v4()),
    "an ARP request": raw(packets.arp_request()),
}

for what, frame in CASES.items():
    expected = echo.expected_reply(frame, SERVER_IPV4, SERVER_IPV6)
    result = testrun.run(program.fd, frame)
    verdict = XDP_VERDICTS.get(result.verdict, result.verdict)
    if expected is None:
        right = verdict == "XDP_PASS" and result.packet == frame
        should = "pass it untouched"
    else:
        right = verdict == "XDP_TX" and echo.same_reply(result.packet, expected)
        should = "answer it"
    print(f"{'ok   ' if right else 'WRONG'} {what:45} should {should:18} got {verdict}")

# %% [markdown]
# The program counts every reply it sends in its per-CPU `replies` map (key 0: ICMPv4, key 1:
# ICMPv6), and a test run uses the same maps as real traffic, so the replies above are already
# counted. `echo.replies(program)` sums them over the CPUs:

# %%
print("replies counted (ICMPv4, ICMPv6):", echo.replies(program))

# %% [markdown]
# ## 4 · Real pings
#
# The same two namespaces as in lab 0, the server's veth carrying your program. One more step
# matters here: we turn the **server kernel's own echo off** (`icmp_echo_ignore_all`, for IPv4
# and IPv6). Otherwise the kernel would answer every ping your program passes, and a program
# that answers nothing would look just as good as one that answers everything. With it off,
# every reply the client gets comes from your program.

# %%
if (previous := globals().get("topo")) is not None:  # run again: remove the last one first
    previous.close()
topo = Topology().start()
for role, side in (("client", topo.client), ("server", topo.server)):
    print(f"{role}: netns {side.netns}, {side.ifname}, {side.ipv4}, {side.ipv6}, MAC {side.mac}")
print("server addresses as configured in the map:", (topo.server.ipv4, topo.server.ipv6) == (SERVER_IPV4,
                                                                                         SERVER_IPV6))

mode = attach(program, topo.server.netns, topo.server.ifname)
print(f"\n{program.name} attached to {topo.server.ifname} in {mode} mode")
topo.kernel_echo(False)
print("server kernel's echo: off")

# %%
before = echo.replies(program)
ping4 = topo.ping(count=10)
ping6 = topo.ping(count=10, ipv6=True)
after = echo.replies(program)
print(f"IPv4: {ping4.received} of {ping4.sent} pings answered; the program counted {after[0] - before[0]}")
print(f"IPv6: {ping6.received} of {ping6.sent} pings answered; the program counted {after[1] - before[1]}\n")
print(ping4.output)

# %% [markdown]
# Every ping answered, every answer counted by your program, while the server's kernel has its
# echo switched off. (With the starter: 0 answered, 0 counted, `100% packet loss`.)

# %% [markdown]
# ## 5 · Who answered?
#
# Let us watch the same exchange with `tcpdump` at both ends of the cable, while the client
# pings twice. Each capture is asked for 4 ICMP packets (2 requests and 2 replies). tcpdump
# needs a moment to start, so the client pings once both say `listening on`; a capture that has
# not seen its 4 packets after a few seconds is stopped through its process id (never by name:
# other tcpdumps on this machine are not ours). The runtime's `Tcpdump` does both.

# %%
with Tcpdump(topo.server) as at_server, Tcpdump(topo.client) as at_client:  # both listening
    pinged = topo.ping(count=2)
    printed = {"server": at_server.output(wait=2), "client": at_client.output(wait=2)}
print(f"ping: {pinged.received} of {pinged.sent} answered\n")
for side, text in printed.items():
    print(f"tcpdump at the {side} ({getattr(topo, side).ifname}):\n{text}\n")

# %% [markdown]
# At the client, tcpdump sees both requests leave and both replies arrive. At the **server** it
# sees **nothing**: not the replies, and not even the requests that plainly arrived there.
#
# That is where XDP sits. tcpdump captures with a packet socket, which the kernel feeds from its
# stack: on receive, when a frame becomes an `sk_buff` and enters the stack
# (`__netif_receive_skb`), on transmit when the stack queues a frame for the device. Your
# program runs in the driver **before** either: the request is turned into the reply and handed
# back to the veth with `XDP_TX` without ever becoming an `sk_buff`, so neither direction
# passes a tap. At the client, the reply enters the stack normally (through the `peer_pass`
# program, see step 6), and there tcpdump sees it.
#
# (With the starter the server's capture shows the two requests, passed to the kernel, and no
# reply, since the kernel's echo is off; the client's shows only the requests.)
#
# The server's kernel keeps counters of the ICMP messages it handled. Its stack never saw a
# request, so they are all still 0 (with the starter, they count every ping sent so far):

# %%
counters = ["IcmpInEchos", "IcmpOutEchoReps", "Icmp6InEchos", "Icmp6OutEchoReplies"]
print(run_in(topo.server.netns, ["nstat", "-asz", *counters]).stdout)  # -s: keep no history file

# %% [markdown]
# So if you need to see what an XDP program sends, capture at the other end of the link, or
# count inside the program itself, as the `replies` map does.

# %% [markdown]
# ## 6 · The veth XDP_TX trap
#
# Lab 0 showed that the client's veth carries a tiny program, `peer_pass`, that only returns
# `XDP_PASS`. Take it away and ping:

# %%
def xdp_tx_errors() -> int:
    """The server veth's count of XDP_TX frames it could not hand over (ethtool -S)."""
    stats = run_in(topo.server.netns, ["ethtool", "-S", topo.server.ifname]).stdout
    return sum(int(line.split(":")[1]) for line in stats.splitlines() if "xdp_tx_errors" in line)


topo.remove_peer_xdp()
before, errors_before = echo.replies(program), xdp_tx_errors()
trapped = topo.ping(count=5)
print(f"without peer_pass: {trapped.received} of {trapped.sent} pings answered")
print(f"the program counted {echo.replies(program)[0] - before[0]} replies sent with XDP_TX")
print(f"the server's veth counted {xdp_tx_errors() - errors_before} XDP_TX errors (ethtool -S)")

# %% [markdown]
# Your program did its job: it built each reply and returned `XDP_TX`, and its counter says so.
# The replies vanished afterwards, in the veth driver. A veth has no wire: `XDP_TX` on one end
# hands the frame directly to the receive queue of the **other** end, and on veth that queue
# (XDP frames are received with NAPI) exists only while the other end has an XDP program of its
# own. Without one, the frame is dropped and counted only in the driver's statistics
# (`rx_queue_0_xdp_tx_errors`), where nobody looks.
#
# On a physical NIC `XDP_TX` puts the frame on the card's transmit ring and the cable does the
# rest; this is a veth peculiarity. But it is a classic: a program that "works on a NIC and loses
# every reply in a test setup of veths". Put `peer_pass` back and the replies come through again:

# %%
topo.add_peer_xdp()
before = echo.replies(program)
recovered = topo.ping(count=5)
print(f"with peer_pass: {recovered.received} of {recovered.sent} pings answered; "
      f"the program counted {echo.replies(program)[0] - before[0]}")

# %% [markdown]
# ## 7 · What it costs
#
# How long does your program take per frame? Two traps first, both in `BPF_PROG_TEST_RUN`'s
# timing:
#
# 1. **One run is dominated by the timer.** The duration test-run reports is measured around all
#    its repeats and divided by their number; with `repeat=1` it is mostly the harness's own
#    overhead (reading the clock, a first run on cold caches), and it varies from call to call.
#    Only many repeats make that overhead vanish in the mean.
# 2. **The buffer is not reset between repeats.** With `repeat=2` the second run gets the frame
#    as the first run left it. For an echo server, that is its own reply.
#
# Both, seen on the valid request:

# %%
request_bytes = raw(packets.icmp_echo_v4())
print("repeat=1, five times:", [testrun.run(program.fd, request_bytes).ns_per_run for _ in range(5)], "ns")
twice = testrun.run(program.fd, request_bytes, repeat=2)
print(f"repeat=2 on the request: verdict {XDP_VERDICTS.get(twice.verdict, twice.verdict)} "
      f"(the verdict of the last run), buffer now holds: {packets.describe(twice.packet)}")

# %% [markdown]
# The second run saw an echo *reply* (for the client, not for the server), and passed it. So
# repeated test runs can only time a path that leaves the frame as it found it: a **pass** path.
# We take one that does all the work but the rewrite: a request whose ICMP checksum is wrong.
# The program parses every header, checks the addresses, verifies the IP header checksum, sums
# the whole ICMP message, finds the sum wrong, and passes the frame unchanged.
#
# And we report the cost **above a floor**: `measure.floor_ns()` times an empty XDP program (it
# only returns `XDP_PASS`) on the same frame, which is what the harness costs by itself.
#
# One more precaution: whatever else runs on the machine (other processes, other virtual
# machines on the same host) can only ever *add* time to a measurement. So we time each one a
# few times, floor and program in turn, and keep the best of each, which is closer to their own
# cost than the mean.

# %%
REPEAT, TRIES = 50_000, 7


def best_ns(frame: bytes) -> tuple[int, int]:
    """(floor, program): the best of TRIES test-run timings of REPEAT runs each, in ns per run."""
    floors, costs = [], []
    for _ in range(TRIES):  # in turn, so that a busy moment hits both alike
        floors.append(measure.floor_ns("xdp", frame, REPEAT))
        costs.append(measure.testrun_ns(program.fd, frame, REPEAT))
    return min(floors), min(costs)


bad_checksum = packets.damaged(packets.icmp_echo_v4(), ICMP, "chksum")
floor, cost = best_ns(bad_checksum)
print(f"{packets.describe(bad_checksum)}, wrong ICMP checksum")
print(f"empty program (the floor): {floor} ns per run")
print(f"{program.name}:             {cost} ns per run, {cost - floor} ns above the floor")

# %% [markdown]
# Most of that is the checksum: verifying it means reading every byte of the message. So the
# cost should grow with the payload. Let us measure it over IPv4 and IPv6, from an empty
# payload up to a full 1500-byte MTU, and fit a straight line through each family's points:
# its **slope** is what each more byte costs (printed per 16-bit word, the unit the checksum
# adds), its **intercept** what a frame costs before any payload.
#
# On the plot: the echo payload in bytes across, the cost per frame above the floor (ns) up,
# one line per IP version.

# %%
SIZES = {"IPv4": (0, 56, 120, 248, 504, 760, 1016, 1272, 1472),
         "IPv6": (0, 56, 120, 248, 504, 760, 1016, 1272, 1452)}
BUILD = {"IPv4": (packets.icmp_echo_v4, ICMP, "chksum"),  # a builder, and the checksum it damages
         "IPv6": (packets.icmp_echo_v6, ICMPv6EchoRequest, "cksum")}

above_floor = {}
fig, ax = plt.subplots(figsize=(6, 3))
for family, sizes in SIZES.items():
    build, layer, checksum = BUILD[family]
    above_floor[family] = []
    for size in sizes:
        floor, cost = best_ns(packets.damaged(build(size), layer, checksum))
        above_floor[family].append(cost - floor)
    slope, intercept = np.polyfit(sizes, above_floor[family], 1)  # a straight-line fit
    per_word = round(2 * slope, 2) + 0.0  # + 0.0: a flat line prints 0.00, not -0.00
    print(f"{family}: payload bytes {sizes}\n      ns above the floor {above_floor[family]}\n"
          f"      about {per_word:.2f} ns more per 16-bit word (the slope), "
          f"{intercept:.0f} ns at payload 0 (the intercept)")
    ax.plot(sizes, above_floor[family], marker="o", label=f"{family}: {per_word:.2f} ns per word")
ax.set_xlabel("echo payload (bytes)")
ax.set_ylabel("ns per frame above the floor")
ax.set_title(f"{program.name}: validating a request (test-run)")
ax.legend()
plt.show()

# %% [markdown]
# The cost rises with the payload, roughly in a straight line: for all but the smallest
# requests the checksum loop is the program's main cost. (With the starter, which passes
# everything at once, both lines stay flat near zero.)
#
# **The slope is the loop, and the loop is the same for both versions.** Both sum the same
# bytes, the ICMP message (an 8-byte header and the payload), with the same function,
# `csum_add_xdp()` in `bpf/include/checksum.h` (if your program sums them some other way, its
# lines may differ for real). It reads the message straight from the packet 64 bytes at a
# time, one bounds check and 32 additions per chunk, and copies out only the rest, the bytes
# short of a last whole chunk, with the helper `bpf_xdp_load_bytes()`. The payloads above are
# chosen so that the message is a whole number of chunks (payload 56: 64 bytes; 120: 128; ...
# 1272: 1280), except the two ends: payload 0 (8 bytes, only a rest) and the largest (1480 or
# 1460 bytes: 23 chunks and a rest). So the middle points lie on a straight line, about 0.2 ns
# per word on the machine this notebook was written on, and both ends sit higher by one helper
# call, 30 to 40 ns there: as much as summing some two hundred words in place. Try payload 57
# instead of 56 in a cell of your own: one byte more, and the cost jumps by that call.
# Parallel lines, then, with the same bumps.
#
# **Where the lines start is the rest, and that differs a little.** What a frame costs whatever
# its payload: parsing, comparing addresses, and the checksum work that does not depend on the
# payload. IPv4 verifies its 20-byte header's own checksum (10 words). IPv6 has no header
# checksum, but its ICMPv6 checksum also covers a pseudo-header, so the program sums the two
# 16-byte addresses (16 words, after one bounds check), and it compares 16-byte addresses
# where IPv4 compares 4. That lifts the start of the IPv6 line (payloads 0 and 56), by a few ns
# to about 20 on that machine: a small shift, lost in the noise of the larger payloads, and no
# change of slope. (The fitted intercept says less than those first points do: it comes from
# all the points, and the helper's bumps at both ends and the noise move it by tens of ns.)
#
# **When the two slopes printed above differ a lot** (say 0.2 against 0.05), the loop did not
# get cheaper for one version: the measurement was disturbed. Whatever else runs on the machine
# can only add time to a try, the best of seven tries does not always escape it, and a point
# pushed up near either end of the range tilts the fitted line (a small cost may even come out
# below zero). Run the cell again, and look at the plot rather than at the slope alone: a point
# that jumps off its line, and not in the next run, is noise; two parallel lines, one a little
# higher at the start, are the program.
#
# Test-run cannot time the reply path itself. Under **real traffic** the kernel can: with its
# run-time accounting on (`measure.bpf_stats_enabled()`, the switch behind the sysctl
# `kernel.bpf_stats_enabled`, held as a file descriptor), it adds up each program's run
# time and run count, which `measure.bpf_stats()` reads. The accounting costs a little itself,
# so it is on only around the measurement. We ping 200 times, first paced (one every 5 ms), then
# back to back (each request sent as soon as the last reply arrives):

# %%
def under_traffic(interval: float) -> None:
    """200 pings at `interval`: the program's mean run time, and the round trips."""
    with measure.bpf_stats_enabled():
        ns_before, runs_before = measure.bpf_stats(program.fd)
        rtts = measure.ping_rtts(topo, 200, interval)
        ns_after, runs_after = measure.bpf_stats(program.fd)
    runs = runs_after - runs_before
    per_run = (ns_after - ns_before) / runs if runs else 0
    how = f"one every {interval * 1000:g} ms" if interval else "back to back"
    print(f"pings {how}: {len(rtts)} of 200 answered, {runs} runs of the program, {per_run:.0f} ns per run")
    if rtts:
        print(f"    round trip: median {measure.percentile(rtts, 0.5):.0f} µs, "
              f"99th percentile {measure.percentile(rtts, 0.99):.0f} µs")


under_traffic(0.005)
under_traffic(0)

# %% [markdown]
# Two things to take from these numbers:
#
# - The program's run time under real traffic is **not** a constant. Paced pings find the CPU's
#   caches cold (and a virtual CPU perhaps just woken up), so each run pays for its misses;
#   back to back, the code, the maps and the packet's memory stay warm and the run time drops
#   towards what test-run measured. Most of the paced number is those misses, not your code's
#   work: the starter, which passes every frame after a glance at its Ethernet header, takes
#   nearly as long per run when paced. A benchmark that reports one number without saying how
#   the traffic arrived says little.
# - Even the slow case is a small part of a ping's round trip, most of which is spent in the
#   client's stack, the `ping` process and the scheduler. The round trip falls too when pings
#   come back to back, for the same reasons.

# %% [markdown]
# ## 8 · Clean up
#
# `program.close()` detaches your program and frees it and its maps; `topo.close()` deletes both
# namespaces, the veth pair and `peer_pass` with them. Both tcpdumps ended in step 5.

# %%
program.close()
topo.close()
left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
ours = [name for name in (topo.client.netns, topo.server.netns) if name in left]
print("namespaces left behind:", ours or "none")
print("tcpdumps still running:", [t.process.pid for t in (at_server, at_client) if t.running] or "none")

# %% [markdown]
# ## What you learned
#
# - An XDP program can answer a packet by rewriting the frame it received in place and
#   returning `XDP_TX`: no allocation, no copy, and the kernel's stack never involved.
# - An echo reply changes few bytes: MACs and IP addresses swapped, a fresh TTL, the type. The
#   checksums follow incrementally (RFC 1624), and swapping addresses does not move them.
# - A server must be strict about what it answers: only intact requests for its own addresses,
#   with verified checksums, and everything else left to the kernel, untouched.
# - Every header you read needs its own bounds check, and a loop over the packet needs a
#   constant bound, or the verifier says no.
# - Frames sent with `XDP_TX` bypass tcpdump on the host that sends them, and on a veth they
#   vanish unless the peer has an XDP program: count in the program, look from the other end.
# - Time programs above a floor, on a path that leaves test-run's buffer unchanged, and expect
#   real traffic to give other (and varying) numbers than a hot loop.
#
# Now write your own: the handout is `labs/xdp-icmp/README.md`, and `make check LAB=xdp-icmp`
# grades your `labs/xdp-icmp/xdp_icmp_echo.c`.
#
# ## Next: lab 2, the same server at TC
#
# In lab `tc-icmp` you build the same ping server one hook later, at TC, where the packet is
# already an `sk_buff`: the kernel offers checksum helpers there, and the reply is sent with
# `bpf_redirect()` instead of `XDP_TX`. The grader's tests are the same; comparing the two costs
# is part of the fun.
