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
# # Lab 2 · A ping server at TC, with the checksum helpers
#
# Same server as lab 1, one hook higher. Your program answers ICMP and ICMPv6 echo requests
# itself, but this time it runs at **TC ingress**, after the kernel has built an `sk_buff` for
# the frame. That costs a little, and buys helpers XDP does not have: the kernel writes the bytes
# and updates the checksums for you. This notebook walks through it:
#
# 1. where TC sits, and the helpers it offers;
# 2. the verifier's new rule at TC: a helper that changes the packet forgets every packet pointer;
# 3. your program on a single frame, with **BPF_PROG_TEST_RUN**;
# 4. your program on a real veth, answering real `ping`s;
# 5. **which hook answers faster?** A measurement that is easy to get wrong, done right: the
#    kernel's own echo, lab 1's XDP server and your TC server, interleaved, as distributions,
#    next to what each program costs by itself;
# 6. clean up.
#
# The notebook works on your `labs/tc-icmp/tc_icmp_echo.c`. With the starter as it is, every
# cell runs, but your program answers nothing: the starter passes every frame to the kernel.

# %% [markdown]
# ## Setup
#
# Everything runs as root, as in the earlier labs.

# %%
import subprocess
import time
from collections import Counter

import matplotlib.pyplot as plt
from IPython.display import Code, display
from scapy.layers.inet import ICMP
from scapy.packet import raw

from bpflab import measure, packets, testrun
from bpflab.attach import attach, detach_tc
from bpflab.course.labs import load_lab
from bpflab.oracles import echo
from bpflab.programs import TC_VERDICTS, XDP_VERDICTS, load, verifier_says
from bpflab.topology import Topology, run_in

SERVER_IPV4, SERVER_IPV6 = packets.SERVER_IPV4, packets.SERVER_IPV6

# %% [markdown]
# ## 1 · Where TC sits
#
# XDP runs in the driver, on raw bytes, before the kernel has spent anything on the frame. If
# the XDP program passes it (or there is none), the kernel allocates a **socket buffer**
# (`struct sk_buff`): the frame plus everything the stack wants to know about it (its length,
# protocol, the interface it came in on, its checksum state, a mark...). The first hook after
# that is **TC** (traffic control) ingress, still before netfilter and the IP stack:
#
# ```text
#  wire ─► NIC ─► driver ─► [ XDP ] ─► sk_buff ─► [ TC ingress ] ─► netfilter ─► IP stack ─► sockets
#                                                       │
#                                                       ├─ TC_ACT_OK        carry on up the stack
#                                                       ├─ TC_ACT_SHOT      drop it
#                                                       └─ TC_ACT_REDIRECT  send it out of an interface
#                                                                           (what bpf_redirect() returns)
# ```
#
# A TC program is of type `BPF_PROG_TYPE_SCHED_CLS` (a *classifier*). It hangs off the `clsact`
# queueing discipline, which has an ingress and an egress hook, and runs in **direct-action**
# mode: its return value is the verdict. It gets a `struct __sk_buff *skb` instead of XDP's
# `struct xdp_md *ctx`; `skb->data` and `skb->data_end` still delimit the bytes it may read
# directly, but only the *linear* part of the buffer (a large frame may continue in pages
# beyond it).
#
# Lab 1 and lab 2, side by side:
#
# | | XDP (lab 1) | TC ingress (this lab) |
# |---|---|---|
# | runs | in the driver, before any `sk_buff` | after the `sk_buff` is built, before the IP stack |
# | reads | `ctx->data` .. `ctx->data_end` | `skb->data` .. `skb->data_end`, after `bpf_skb_pull_data()` |
# | writes | through packet pointers | `bpf_skb_store_bytes()` (direct writes work too) |
# | checksums | by hand, RFC 1624 (`checksum.h`) | `bpf_l3_csum_replace()`, `bpf_l4_csum_replace()` |
# | answer | `XDP_TX` | `bpf_redirect(skb->ifindex, 0)`, i.e. `TC_ACT_REDIRECT` |
# | pass | `XDP_PASS` | `TC_ACT_OK` |
#
# The helpers this lab uses:
#
# - `bpf_skb_pull_data(skb, len)` makes the first `len` bytes linear, so that direct access
#   covers them. The entry function calls it with `skb->len`: the whole frame, so that the ICMP
#   checksum can be verified over all of it.
# - `bpf_skb_store_bytes(skb, offset, from, len, flags)` copies `len` bytes from the stack into
#   the packet at `offset`.
# - `bpf_l3_csum_replace(skb, offset, from, to, size)` updates the checksum at `offset` for a
#   field that changes from `from` to `to` (`size` 2 or 4 bytes): RFC 1624's incremental update,
#   done by the kernel. `bpf_l4_csum_replace()` is the same for a transport checksum, with a
#   flag for fields that are part of the pseudo-header. Neither writes the field itself: that is
#   still `bpf_skb_store_bytes()`'s job.
# - `bpf_redirect(ifindex, 0)` asks for the packet to be sent out of interface `ifindex` once
#   the program returns, and returns `TC_ACT_REDIRECT`. With `skb->ifindex`, the interface the
#   request came in on, that is TC's `XDP_TX`.
#
# That is the practical difference between the two hooks for a server like this one: XDP has
# no helper such as `bpf_l4_csum_replace`, so lab 1 did every checksum update by hand, while TC
# offers a whole family of helpers that read, write and fix up the `sk_buff` for you. Here is
# the program:

# %%
lab = load_lab("tc-icmp")
source = lab.source()
print(f"{lab.title}\nfile: {source.name}, entry: {lab.entry}(), hook: {lab.hook}")
display(Code(source.read_text(), language="c"))

# %% [markdown]
# ## 2 · The verifier's new rule: a helper that changes the packet forgets every pointer
#
# `bpf_skb_store_bytes()` may have to make the packet writable first: if the buffer is shared
# (a clone, as when tcpdump holds a copy), the kernel copies it, and the packet's bytes move.
# So after any helper that *may* change the packet data (`bpf_skb_store_bytes`, the two checksum
# helpers, `bpf_skb_pull_data`, ...), the verifier forgets every packet pointer it had: they are
# plain numbers to it now, and reading through one is refused.
#
# Below, a small TC program parses Ethernet and IPv4 properly, with every bounds check, writes
# one byte with `bpf_skb_store_bytes()` (the TTL; a toy, it leaves the checksum wrong), then
# reads the IP header's protocol through the pointer it checked *before* the helper.
# `load_text()` writes it to a temporary `broken.c` and loads it at TC:

# %%
BROKEN = """\
#include <uapi/linux/pkt_cls.h>
#include "parsing.h"

int broken(struct __sk_buff *skb)
{
    struct cursor cur = cursor_start_skb(skb);
    struct ethhdr *ethh = parse_ethhdr(&cur);
    struct iphdr *iph;
    __u8 ttl = 64;

    if (!ethh || ethh->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    iph = parse_iphdr(&cur);
    if (!iph)
        return TC_ACT_OK;
    /* READ BEFORE THE HELPER */
    bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &ttl, sizeof(ttl), 0);
    /* drop ICMP: iph was checked, but before the helper */
    return iph->protocol == IPPROTO_ICMP ? TC_ACT_SHOT : TC_ACT_OK;
}
"""


print(verifier_says(BROKEN, "broken", "tc", "broken.c"))

# %% [markdown]
# `iph` sat in a register (`R7` here) that the verifier knew as a packet pointer with 34 bytes
# checked (`pkt(r=34)`). After the call it is a `scalar`: a number that could point anywhere, and
# `invalid mem access 'scalar'` is the verifier refusing to read through it. The bounds check did
# nothing wrong; it just no longer applies.
#
# There are two ways out. Start a new cursor from `skb` after the helper and parse (and
# bounds-check) again; or, simpler, **read everything you will need before the first helper**,
# into local variables, which no helper can move. The same program, reading the protocol first:

# %%
READ_FIRST = """\
    __u8 protocol = iph->protocol;  /* a copy on the stack survives the helper */"""
FIXED = BROKEN.replace("    /* READ BEFORE THE HELPER */", READ_FIRST).replace(
    "return iph->protocol ==", "return protocol =="
)
print(verifier_says(FIXED, "broken", "tc", "broken.c"))

# %% [markdown]
# Your echo server meets this rule head on: it must check the request through packet pointers,
# then rewrite it with several helper calls in a row. So it reads every value the reply needs
# (the two addresses, the old TTL and type words) first, then makes the calls, and never
# touches a packet pointer again. The `swap_macs_skb()` the starter gives you follows the same
# order: it copies both MAC addresses onto the stack, then stores them with one call.

# %% [markdown]
# ## 3 · One request, no network
#
# Load the program, and tell it which addresses are its own: `echo.configure()` writes them into
# its `server` map, as in lab 1.

# %%
program = load(source, lab.entry, lab.hook)
echo.configure(program, SERVER_IPV4, SERVER_IPV6)
print(program.loaded())

# %% [markdown]
# Now one echo request through test-run. A TC program that answers returns `TC_ACT_REDIRECT`
# (7), the value `bpf_redirect()` returned to it; test-run only reports it, it does not send
# anything. We compare what the program made of the request with the course's oracle,
# `echo.expected_reply()`, the exact reply a correct server sends (the grader does the same).

# %%
def show_run(frame: bytes, what: str) -> None:
    """Test-run one frame; print the verdict and compare with what a correct server does."""
    result = testrun.run(program.fd, frame)
    expected = echo.expected_reply(frame, SERVER_IPV4, SERVER_IPV6)
    print(f"{what}: {packets.describe(frame)}")
    print(f"  verdict: {result.verdict} = {TC_VERDICTS.get(result.verdict, '?')}")
    print(f"  left as: {packets.describe(result.packet)}")
    if expected is None:
        print(f"  must be passed untouched: {'yes' if result.packet == frame else 'NO, it was changed'}\n")
    else:
        print(f"  expected reply: {packets.describe(expected)}")
        print(f"  exactly the expected reply: {echo.same_reply(result.packet, expected)}\n")


request = raw(packets.icmp_echo_v4())
show_run(request, "an echo request")
show_run(raw(packets.icmp_echo_v6()), "an ICMPv6 echo request")

# %% [markdown]
# And a request the program must *not* answer: the same one with its ICMP checksum damaged
# (`packets.damaged()` flips bits of the field it is named). Every check runs, the sum comes out
# wrong, and the frame goes to the kernel as it came, with `TC_ACT_OK`. We will meet this frame
# again in step 5.

# %%
show_run(packets.damaged(request, ICMP, "chksum"), "a request with a wrong ICMP checksum")

# %% [markdown]
# ## 4 · Real pings
#
# The same two namespaces as before, joined by a veth pair. `attach()` adds a `clsact` qdisc to
# the server's interface and your program as a filter at its ingress hook, in direct-action
# mode, and returns where it went. `tc filter show` lists it: its name, `direct-action`, its
# program id, and `jited` (compiled to machine code).

# %%
if (previous := globals().get("topo")) is not None:  # run again: remove the last one first
    previous.close()
topo = Topology().start()
where = attach(program, topo.server.netns, topo.server.ifname)
print(f"{program.name} attached to {topo.server.ifname}: {where}\n")
print(run_in(topo.server.netns, ["tc", "filter", "show", "dev", topo.server.ifname, "ingress"]).stdout)

# %% [markdown]
# To be sure who answers, the server's kernel stops answering pings (`kernel_echo(False)` sets
# `icmp_echo_ignore_all` in the server's namespace). Then the client pings over IPv4 and IPv6:
# every reply it gets comes from your program, which counts them in its `replies` map.

# %%
topo.kernel_echo(False)
before = echo.replies(program)
ping4 = topo.ping(count=10)
ping6 = topo.ping(count=10, ipv6=True)
after = echo.replies(program)
print(f"IPv4: {ping4.received} of {ping4.sent} pings answered; the program counted {after[0] - before[0]}")
print(f"IPv6: {ping6.received} of {ping6.sent} pings answered; the program counted {after[1] - before[1]}")
print(f"echo.replies(program) = {after}\n")
print(ping4.output)

# %% [markdown]
# ### No veth trap at TC
#
# In lab 1, replies sent with `XDP_TX` reached the client only because the client's veth had an
# XDP program of its own (`peer_pass`). A redirect from TC goes through the kernel's ordinary
# transmit path (`dev_queue_xmit`), like any packet the server sends, so it needs no such help.
# Take `peer_pass` away, ping, and put it back:

# %%
topo.remove_peer_xdp()
without_peer = topo.ping(count=5)
topo.add_peer_xdp()
print(f"without peer_pass on the client's veth: {without_peer.received} of {without_peer.sent} answered")

# %% [markdown]
# ## 5 · Which hook answers faster?
#
# A common way to compare an XDP server, a TC server and the kernel's own echo is to run
# `ping` once against each, one after the other, and to compare the min/avg/max line `ping`
# prints at the end. Done that way, on a virtual machine, it can give something like this:
#
# | RTT (ms) | XDP | TC | kernel |
# |---|---:|---:|---:|
# | min | 0.175 | 0.158 | 0.158 |
# | avg | 0.378 | 0.410 | 0.425 |
# | max | 0.552 | 0.871 | 0.750 |
#
# which looks puzzling: XDP has the worst minimum, TC the worst maximum, and the kernel, which
# does the most work, ties for the best minimum. That measurement cannot rank the hooks, for
# three reasons:
#
# - **One run each, one after the other.** Whatever else the machine did during one run (another
#   process, a timer, a CPU changing its clock speed) counts against that responder alone.
# - **Min, average and max describe a distribution badly.** A ping's round trip has a long tail;
#   the maximum is one outlier, the minimum another, and the average is pulled by the tail.
# - **The effect is far smaller than the noise.** The responder's work is a small part of a round
#   trip. Most of it is the client: `ping` writing to its socket, the system calls, the kernel's
#   stack on the way out and back in, waking `ping` up again, and the scheduler in between.
#
# So here the three responders take turns on the same topology, in **rounds**: in each round,
# each responder in turn is put in place, answers 100 pings (2 ms apart), and is taken away
# again, in an order that rotates from round to round. Slow drifts of the machine then affect
# all three alike. We keep every round trip, and compare distributions.
#
# The XDP responder is lab 1's reference program (your own lab 1 file only where the reference
# is not shipped, as in the student release), so that the comparison does not depend on the
# state of your lab 1.

# %%
xdp_lab = load_lab("xdp-icmp")
xdp_source = xdp_lab.reference if xdp_lab.reference.exists() else xdp_lab.source()
xdp_program = load(xdp_source, xdp_lab.entry, xdp_lab.hook)
echo.configure(xdp_program, SERVER_IPV4, SERVER_IPV6)
which = "lab 1's reference" if xdp_source == xdp_lab.reference else "your lab 1 file"
print(f"XDP responder: {xdp_program.name}() from {xdp_source.name}, {which}")

# %% [markdown]
# The rounds. For the kernel's turn, no program is attached and the kernel's echo is on; for
# each program's turn, only that program is attached and the kernel's echo is off. The programs'
# `replies` counters show who answered. `measure.ping_rounds()` runs the rounds; each responder
# says how it is put in place and taken away again. (`program.close()` would detach a program
# too, but it also frees it: a program's responder attaches it by its fd with `attach_xdp` or
# `attach_tc`, and `detach_xdp` or `detach_tc` takes it away, round after round.)

# %%
RESPONDERS = ("kernel", "XDP", "TC")
ROUNDS, PINGS, INTERVAL = 10, 100, 0.002


responders = {"kernel": measure.kernel_responder(topo),
              "XDP": measure.program_responder("XDP", xdp_program, topo),
              "TC": measure.program_responder("TC", program, topo)}


def counted() -> dict[str, int]:
    """ICMPv4 replies counted so far by each program."""
    return {"XDP": echo.replies(xdp_program)[0], "TC": echo.replies(program)[0]}


detach_tc(topo.server.netns, topo.server.ifname)  # step 4's attachment: from here on, the rounds decide
started = time.monotonic()
measured_rounds = measure.ping_rounds(topo, list(responders.values()), ROUNDS, PINGS, INTERVAL, counted)
rounds, answered_by, silent = measured_rounds.rtts, measured_rounds.counted, measured_rounds.silent
print(f"{ROUNDS} rounds in {time.monotonic() - started:.1f} s")
all_rtts = {r: measured_rounds.all(r) for r in RESPONDERS}
for r in RESPONDERS:
    sent = PINGS * sum(1 for chunk in rounds[r] if chunk) + (PINGS if r in silent else 0)
    print(f"{r:6}: {len(all_rtts[r])} of {sent} pings answered; replies counted by the XDP "
          f"program {answered_by[r]['XDP']}, by the TC program {answered_by[r]['TC']}")
measured = [r for r in RESPONDERS if all_rtts[r]]  # a starter answers nothing: leave it out

# %% [markdown]
# In the kernel's turns neither program counted anything, and in each program's turns that
# program counted every reply: each turn was answered by the responder it was meant for.
#
# Now the distributions. A **CDF** (cumulative distribution function) plots, for every round
# trip time *x*, the fraction of pings that took *x* or less: the median is where a curve crosses
# 0.5, and a curve further left is faster. On the right, each round's median per responder: how
# much the machine itself drifts from one round to the next.

# %%
def cdf(values: list[float]) -> tuple[list[float], list[float]]:
    ordered = sorted(values)
    return ordered, [(i + 1) / len(ordered) for i in range(len(ordered))]


fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
for r in measured:
    xs, ys = cdf(all_rtts[r])
    left.step(xs, ys, where="post", label=f"{r} ({len(xs)} pings)")
    right.plot(range(1, ROUNDS + 1), [measure.percentile(chunk, 0.5) if chunk else float("nan")
                                      for chunk in rounds[r]], marker="o", label=r)
if measured:
    left.set_xlim(0, 1.3 * max(measure.percentile(all_rtts[r], 0.99) for r in measured))
left.set_xlabel("round-trip time (µs)")
left.set_ylabel("fraction of pings")
left.set_title("Round trips, all rounds (the far tail cut off)")
left.grid(alpha=0.3)
left.legend(loc="lower right")
right.set_xlabel("round")
right.set_ylabel("median round trip (µs)")
right.set_title("Each round's median")
right.set_ylim(bottom=0)
right.grid(alpha=0.3)
right.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The same as numbers: percentiles of every responder's round trips over all rounds. (`ping`
# prints round trips to the microsecond, hence the whole numbers and the steps in the curves.)

# %%
print(f"{'responder':10} {'pings':>6} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8}")
for r in measured:
    p50, p90, p99 = (measure.percentile(all_rtts[r], f) for f in (0.5, 0.9, 0.99))
    print(f"{r:10} {len(all_rtts[r]):6} {p50:8.0f} {p90:8.0f} {p99:8.0f}")

# %% [markdown]
# And the one-run method from the start of this step, applied to each of our rounds: one run of
# 100 pings per responder, ranked by `ping`'s min, avg and max. If that method could rank the
# hooks, every round would name the same winner.

# %%
def stats_line(rtts: list[float]) -> str:
    return f"{min(rtts):4.0f}/{sum(rtts) / len(rtts):5.1f}/{max(rtts):5.0f}"


def rank_rounds() -> None:
    """Each round's min/avg/max per responder, and how often each responder had the lowest."""
    winners = {"min": Counter(), "avg": Counter(), "max": Counter()}
    print("round   " + "".join(f"{r + ' min/avg/max µs':>22}" for r in measured))
    for number in range(ROUNDS):
        chunks = {r: rounds[r][number] for r in measured if rounds[r][number]}
        print(f"{number + 1:5}   " + "".join(f"{stats_line(chunks[r]):>22}" for r in chunks))
        for name, statistic in (("min", min), ("avg", lambda v: sum(v) / len(v)), ("max", max)):
            winners[name][min(chunks, key=lambda r, s=statistic: s(chunks[r]))] += 1
    for name, tally in winners.items():
        print(f"lowest {name}: " + ", ".join(f"{r} in {n} rounds" for r, n in tally.most_common()))


if len(measured) > 1:
    rank_rounds()
else:
    print("Only", measured, "answered: nothing to rank.")

# %% [markdown]
# ### What each program costs by itself
#
# The round trip measures the whole path. What does the responder itself cost? The kernel can
# time a program alone, with `BPF_PROG_TEST_RUN` (as in lab 1, step 7), minding its two traps:
#
# 1. **The buffer is not reset between repeats.** With `repeat=2`, the second run gets the
#    frame as the first run left it: for an echo server, its own reply, which it passes.
# 2. **One run is dominated by the timer.** With `repeat=1` the duration is mostly the cost of
#    entering the harness and reading the clock, and it varies from call to call.
#
# Both, on your TC program and the valid request:

# %%
twice = testrun.run(program.fd, request, repeat=2)
print(f"repeat=2: verdict {TC_VERDICTS.get(twice.verdict, twice.verdict)} (the last run's), "
      f"buffer holds {packets.describe(twice.packet)}")
print("repeat=1, five times:", [testrun.run(program.fd, request).ns_per_run for _ in range(5)], "ns")

# %% [markdown]
# So repeated runs can only time a path that leaves the frame as it found it: a **pass** path.
# The one that does the most work is a request with a wrong ICMP checksum (step 3): every header
# parsed, the addresses compared, the IP header checksum verified, the whole ICMP message
# summed, then `TC_ACT_OK` (or `XDP_PASS`) with the frame untouched. That is the reply path
# without the rewrite.
#
# Each hook's harness has a cost of its own (building the context, the call, the loop), so each
# program is reported **above its hook's floor**: `measure.floor_ns()` times an empty program of
# the same type (it only returns `XDP_PASS` or `TC_ACT_OK`) on the same frame. Two sizes: a
# default ping (56 bytes of payload) and one that fills the MTU (1472 bytes).

# %%
VERDICT_NAMES = {"xdp": XDP_VERDICTS, "tc": TC_VERDICTS}
print(f"{'program':15} {'frame':>8} {'verdict':>12} {'untouched':>9} {'floor ns':>9} {'program ns':>11} "
      f"{'above floor':>12}")
above_floor = {}
for size in (56, 1472):
    frame = packets.damaged(packets.icmp_echo_v4(size), ICMP, "chksum")
    for responder in (xdp_program, program):
        once = testrun.run(responder.fd, frame)
        verdict = VERDICT_NAMES[responder.hook].get(once.verdict, str(once.verdict))
        floor = measure.floor_ns(responder.hook, frame)
        cost = measure.testrun_ns(responder.fd, frame)
        above_floor[responder.hook, size] = cost - floor
        print(f"{responder.name:15} {len(frame):6} B {verdict:>12} {once.packet == frame!s:>9} {floor:9} "
              f"{cost:11} {cost - floor:+12}")

# %% [markdown]
# Tens of nanoseconds for a default ping, and up to about a microsecond for one that fills the
# MTU: most of it is the checksum loop, which reads every byte of the message, and that loop is
# the same code at both hooks. (With the starter, which passes everything at once, the TC
# program stays close to its floor.)
#
# Test-run cannot time the reply path itself; real traffic can. With its run-time accounting on
# (`measure.bpf_stats_enabled()`, the switch behind `kernel.bpf_stats_enabled`), the kernel adds
# up each program's run time and count (`measure.bpf_stats()`). Each program
# answers 200 pings alone, kernel echo off, and we divide. The accounting costs a little itself,
# so it is on only around the pings.

# %%
reply_path_ns = {}
print(f"{'program':15} {'answered':>9} {'runs':>5} {'ns per run':>11}")
for name, responder in (("XDP", xdp_program), ("TC", program)):
    with responders[name].turn(), measure.bpf_stats_enabled():
        ns_before, runs_before = measure.bpf_stats(responder.fd)
        answered = measure.ping_rtts(topo, 200, INTERVAL)
        ns_after, runs_after = measure.bpf_stats(responder.fd)
    runs = runs_after - runs_before
    reply_path_ns[name] = (ns_after - ns_before) / max(runs, 1)
    print(f"{responder.name:15} {len(answered):9} {runs:5} {reply_path_ns[name]:11.0f}")

# %% [markdown]
# Under real traffic the program runs once per packet, 2 ms apart, with the caches cold, so it
# takes longer than in test-run's hot loop; and the TC program's helpers do more than lab 1's
# pointer writes (each call checks the offsets and that the buffer is writable). Still, each is
# in the order of a microsecond, against tens of microseconds for a round trip.
#
# Now the two kinds of measurement side by side:

# %%
if len(measured) == len(RESPONDERS) and not silent:
    median = {r: measure.percentile(all_rtts[r], 0.5) for r in RESPONDERS}
    drift = {r: [measure.percentile(chunk, 0.5) for chunk in rounds[r]] for r in RESPONDERS}
    per_round = list(zip(drift["kernel"], drift["XDP"], drift["TC"], strict=True))
    print("median round trip: " + ", ".join(f"{r} {median[r]:.0f} µs" for r in RESPONDERS))
    print(f"  TC minus XDP: {median['TC'] - median['XDP']:+.0f} µs; "
          f"kernel minus XDP: {median['kernel'] - median['XDP']:+.0f} µs")
    print("one round's median, lowest to highest: "
          + ", ".join(f"{r} {min(drift[r]):.0f}-{max(drift[r]):.0f} µs" for r in RESPONDERS))
    print(f"rounds where XDP's median was below TC's: {sum(x < t for _, x, t in per_round)} of {ROUNDS} "
          f"({sum(x == t for _, x, t in per_round)} ties)")
    print(f"rounds where the kernel's median was the highest: "
          f"{sum(k > max(x, t) for k, x, t in per_round)} of {ROUNDS}")
    small = max(above_floor["xdp", 56], above_floor["tc", 56])
    print(f"each program validating a default ping, above its floor: at most {small} ns "
          f"({100 * small / 1000 / median['XDP']:.1f}% of the XDP median round trip)")
    print(f"each program answering under real traffic: XDP {reply_path_ns['XDP']:.0f} ns, "
          f"TC {reply_path_ns['TC']:.0f} ns (a difference of "
          f"{100 * (reply_path_ns['TC'] - reply_path_ns['XDP']) / 1000 / median['XDP']:.0f}% "
          f"of the XDP median round trip)")
else:
    print("Only", measured, "answered: finish your program to compare all three responders.")

# %% [markdown]
# ### One more experiment: the client's side
#
# If the round trip measured the responder, changing the *client* should change nothing. The
# topology gives the client's veth a program in every turn, `peer_pass`, because lab 1's
# `XDP_TX` replies need it (the veth trap) and TC's do not. Same TC responder, with and without
# `peer_pass`, interleaved as before:

# %%
client_side = {"with peer_pass": [], "without": []}
if "TC" in measured:
    with responders["TC"].turn():
        for number in range(6):
            order = ("without", "with peer_pass") if number % 2 else ("with peer_pass", "without")
            for setup in order:
                if setup == "without":
                    topo.remove_peer_xdp()
                try:
                    client_side[setup] += measure.ping_rtts(topo, PINGS, INTERVAL)
                finally:
                    if setup == "without":
                        topo.add_peer_xdp()
    print(f"{'TC responder':16} {'pings':>6} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8}")
    for setup, rtts in client_side.items():
        p50, p90, p99 = (measure.percentile(rtts, f) for f in (0.5, 0.9, 0.99))
        print(f"{setup:16} {len(rtts):6} {p50:8.0f} {p90:8.0f} {p99:8.0f}")
else:
    print("Your TC program answers no pings yet: nothing to measure.")

# %% [markdown]
# A program on the *client's* interface, which returns `XDP_PASS` and does nothing else, moves
# the TC responder's median round trip by a microsecond or more (2 to 7 µs when this notebook
# was written): more than the two programs' own costs differ. A reply sent by TC (or by the
# kernel) is an `sk_buff`; to run `peer_pass` on it, the client's veth receives it through its
# XDP queue, and often copies it into a page of its own first. `XDP_TX` replies arrive as XDP
# frames already.
#
# ### What the numbers say
#
# On this veth a round trip takes 10 to 30 microseconds, and almost none of it is the
# responder's own work. Measured alone, each program spends tens of nanoseconds above its floor
# validating a default ping (test-run, hot caches), and from about half a microsecond to two
# answering one under real traffic, with cold caches (TC several hundred ns more than XDP, for its
# helper calls). The rest is the sender (`ping` writing to its socket, the system calls, the
# client's stack out and back in, waking `ping` for each reply), the scheduler, and the path in
# between.
#
# What that means for ranking the hooks (the figures in brackets come from the runs made while
# this notebook was written; yours are printed above):
#
# - **The kernel's own echo** is usually the slowest at the median, by a few microseconds (2 to
#   7 µs above XDP's; in one run, made while the machine was busy with other work, the three
#   medians came within 2 µs of each other). It takes the whole way up (IP, ICMP, a route lookup
#   for the reply) and builds a new packet for the reply, where the programs turn the request
#   around where it landed. Even that shift shows only because thousands of samples came from
#   interleaved rounds.
# - **XDP against TC**: the curves lie close together. XDP's is usually a little to the left,
#   not always (TC's median minus XDP's: -1 to +4 µs), and never by more than one responder's
#   median moves from one round to the next. And that gap is not the programs' work, which
#   differs by well under a microsecond: it is the path around them. The last experiment shows
#   how much the path weighs: `peer_pass`, there for XDP's sake, costs TC's replies as much as
#   the whole gap between the hooks, or more. (The server's side changes too: while an XDP
#   program is attached, its veth receives through that queue of its own.)
# - **One run each, ranked by min/avg/max**: applied to our own rounds, that method names
#   different winners from round to round (now and then even the kernel), and its maxima are
#   single outliers. One run per responder ranks noise.
#
# To compare the hooks themselves, time the programs (test-run above a floor, `bpf_stats` under
# real traffic), or drive them at full rate with a load that does not go through a sender's
# socket stack, and count packets per second. A ping's round trip measures the ping, and the
# path it takes.

# %% [markdown]
# ## 6 · Clean up
#
# `close()` detaches each program (if still attached) and frees it and its maps; `topo.close()`
# deletes both namespaces, with the veth pair and the client's `peer_pass` program.

# %%
program.close()
xdp_program.close()
topo.close()
left_over = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
ours = [name for name in (topo.client.netns, topo.server.netns) if name in left_over]
print("namespaces left behind:", ours or "none")

# %% [markdown]
# ## What you learned
#
# - TC ingress runs after the kernel has built the `sk_buff`, before the IP stack. A TC program
#   (`SCHED_CLS`, on a `clsact` qdisc, in direct-action mode) returns its verdict: `TC_ACT_OK` to
#   pass, `TC_ACT_SHOT` to drop, and what `bpf_redirect()` returns to send the packet out of an
#   interface.
# - TC has helpers XDP lacks: `bpf_skb_store_bytes()` writes into the packet, and
#   `bpf_l3_csum_replace()` / `bpf_l4_csum_replace()` update checksums for a changed field, so no
#   checksum arithmetic is written by hand for the reply.
# - Direct access covers only the linear part of an `sk_buff`: `bpf_skb_pull_data()` first.
# - After any helper that may change the packet, every packet pointer is gone as far as the
#   verifier is concerned: read what you need first, or parse again.
# - A redirect from TC takes the ordinary transmit path: no veth trap.
# - Measuring: interleave what you compare, keep distributions rather than min/avg/max, and
#   time a program by itself above a floor. A ping's round trip is dominated by the sender, the
#   scheduler and the path, not by the nanoseconds (at most a microsecond or so) that either
#   program spends on the packet.
#
# Now write your own: the handout is `labs/tc-icmp/README.md`, and `make check LAB=tc-icmp`
# grades your `labs/tc-icmp/tc_icmp_echo.c`.
