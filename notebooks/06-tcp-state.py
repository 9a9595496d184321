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
# # Lab 6 · Which TCP state each hook can see
#
# The project this course grew from ended on an open question (seed report, §4.3):
#
# > During this project, we did not find a way to use these maps to pass information about
# > kernel networking stack state (TCP state) to different eBPF programs. However, there are many
# > eBPF hook points, and a direction for future work could be exploring whether there are hooks
# > that can access TCP state, and thus pass this state to different points in the kernel (i.e.
# > to the XDP hook) via maps.
#
# and concluded (§4.4) that servers for stateful protocols may be "prohibitively difficult" in
# eBPF. This notebook answers with measurements, one hook at a time, each program checked
# against the kernel's own view (`ss` for sockets, `nstat` for counters):
#
# 1. **XDP** can look up the socket a segment belongs to and read its *state*, nothing more;
# 2. **TC** can also read the connection's figures: congestion window, RTT, retransmissions;
# 3. **sock_ops** is *called* by the kernel at every state change, and writes what it learns
#    into a map that an **XDP** program reads: TCP state reaches XDP, through a map;
# 4. a **SYN shield** at XDP answers a SYN flood with the kernel's own SYN cookies, keeping no
#    state at all, so the listener's queue never fills.
#
# It runs on `labs/tcp-state/tcp_state.c` if you have one (the student release), else on the
# reference. With the starter every cell runs, but the programs count nothing and the tables
# and figures stay empty.

# %% [markdown]
# ## Setup
#
# The file holds five programs, one per step, each at its own hook; they share the file's maps.
# `load_parts()` compiles the file once and loads each part on its own: one the verifier refuses
# does not take the others down (its explanation is printed instead). `TcpLab` builds the
# client and server namespaces, starts the lab's TCP server inside a cgroup of its own, and
# attaches the sock_ops program to that cgroup: it sees the server's sockets, and only them.
#
# Traffic is real, so a cell waits until the server's namespace has received no segment for a
# moment before it reads any counter (`net.settle()`).

# %%
import contextlib
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Code, Markdown, display

from bpflab import measure
from bpflab.course.labs import load_lab
from bpflab.oracles.tcp_kernel import STATE_NAMES
from bpflab.parts import load_parts
from bpflab.programs import load_text, verifier_says
from bpflab.tcp_state import TcpLab, flows, per_state, segment
from bpflab.topology import in_netns, sysctl
from bpflab.verdicts import verdict

for previous in ("net", "parts"):  # run again: undo the last run's network and programs first
    if previous in globals():
        globals()[previous].close()

lab = load_lab("tcp-state")
source = lab.source()
text = source.read_text()
parts = load_parts(source, lab)
for entry in lab.entries:
    status = "loaded" if entry in parts.programs else parts.refused[entry].explain()
    print(f"{entry} ({lab.hook_of(entry)}): {status}")
net = TcpLab(Path(tempfile.mkdtemp()) / "server.log", sockops=parts.programs.get("sockops_flows")).start()
print(f"\nserver listening in {net.server_netns}, clients in {net.client_netns}")


def grown(before: dict, after: dict) -> dict:
    """What each counter gained between two readings (only those that moved)."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def show(header: list[str], rows: list[list]) -> None:
    """A table, as Markdown."""
    lines = [header, ["---"] * len(header), *rows]
    display(Markdown("\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)))


def figures(state: int, cwnd: int | None, srtt_us: float | None, retrans: int) -> list:
    """A connection's state, cwnd, RTT (ms) and retransmissions, as table cells."""
    rtt = "—" if srtt_us is None else f"{srtt_us / 1000:.2f}"
    return [STATE_NAMES.get(state, state), "—" if cwnd is None else cwnd, rtt, retrans]


NONE = ["—"] * 4  # no figures: the map has no entry, or ss no socket


def ss_figures(sock) -> list:
    """`figures` of a socket as ss shows it (no socket: "(gone)", ss shows live sockets only)."""
    if sock is None:
        return ["(gone)", *NONE[1:]]
    return figures(sock.state, sock.cwnd, sock.rtt_ms and sock.rtt_ms * 1000, sock.retrans)


def function_of(text: str, name: str) -> str:
    """The C function `name` in `text`, from its signature to its closing brace."""
    start = text.index(f"int {name}(")
    return text[start : text.index("\n}\n", start) + 3]


# %% [markdown]
# ## Step 1 · What XDP can see of a connection
#
# XDP runs before the kernel has an `sk_buff`, let alone a socket. But it may *ask* which socket a
# segment will go to: `bpf_skc_lookup_tcp(ctx, &tuple, ...)` looks the 4-tuple up in the kernel's
# socket tables, as the stack will a moment later, and returns a `struct bpf_sock *`: family,
# addresses, ports and **state**, nothing of the connection's figures. The lookup takes a
# reference on the socket, which `bpf_sk_release()` gives back.
#
# Below, your `xdp_tcp_seen()`, then three whole connections while it counts (a SYN, a request
# line, 3000 bytes from the client, 20 kB back; the second closed by the server first), beside
# the kernel's count of segments received (`TcpInSegs`, from `nstat`). Then the same with a
# variant of your program whose only change is `bpf_sk_lookup_tcp` (no **c**) in place of
# `bpf_skc_lookup_tcp`. No segment of an exchange arrives while the server's side is in
# TIME_WAIT, so a last row test-runs an ACK for one (from inside the server's namespace, where the
# lookup finds its sockets).

# %%
seen = parts["xdp_tcp_seen"]
display(Code(function_of(text, "xdp_tcp_seen"), language="c"))
EXCHANGES = (False, True, False)  # close=True: the server closes first and its side waits in TIME_WAIT


def count_segments(program) -> tuple[dict[str, int], int]:
    """Three connections with `program` attached: its per-state counts, and the kernel's TcpInSegs."""
    kernel = net.settle()
    with net.counting(program, "seen") as counted:
        for close in EXCHANGES:
            net.exchange(wanted=20_000, send=b"d" * 3000, close=close)
    return counted, net.settle()["TcpInSegs"] - kernel["TcpInSegs"]


def time_wait_probe(program) -> str:
    """Test-run an ACK for a connection in TIME_WAIT; the state `program` counted it under."""
    waiting = [s for s in net.sockets() if s.state_name == "TIME_WAIT"]
    if not waiting:
        return "(no TIME_WAIT socket)"
    before = per_state(program, "seen")
    net.test_run(program, segment("A", sport=waiting[-1].peer[1], seq=5, ack=5))
    return ", ".join(grown(before, per_state(program, "seen"))) or "(not counted)"


seen_fn = function_of(text, "xdp_tcp_seen")
if "bpf_skc_lookup_tcp(ctx" not in seen_fn:
    print("Your xdp_tcp_seen() does not call bpf_skc_lookup_tcp(ctx, ...) yet: the variant is the same.")
sk_text = text.replace(seen_fn, seen_fn.replace("bpf_skc_lookup_tcp(ctx", "bpf_sk_lookup_tcp(ctx"))
sk_seen = load_text(sk_text, "xdp_tcp_seen", "xdp", "tcp_state_sk.c")
counted = {name: count_segments(program) for name, program in (("skc", seen), ("sk", sk_seen))}
probes = {"skc": time_wait_probe(seen), "sk": time_wait_probe(sk_seen)}
sk_seen.close()

states = sorted({s for counts, _ in counted.values() for s in counts},
                key=lambda s: sum(c.get(s, 0) for c, _ in counted.values()), reverse=True)
show(["socket state found", "`bpf_skc_lookup_tcp` (yours)", "`bpf_sk_lookup_tcp` (variant)"],
     [[s, *(counted[k][0].get(s, 0) for k in ("skc", "sk"))] for s in states]
     + [["**all segments counted**", *(sum(counted[k][0].values()) for k in ("skc", "sk"))],
        ["**TcpInSegs (the kernel)**", *(counted[k][1] for k in ("skc", "sk"))],
        ["an ACK for a TIME_WAIT socket", probes["skc"], probes["sk"]]])

# %% [markdown]
# Every segment the kernel received was counted once, under the state of the socket it was for.
# The states tell the handshake's story: each SYN finds the **LISTEN**ing socket; the handshake's
# last ACK finds a **NEW_SYN_RECV** request socket (since Linux 4.4 a half-open connection is a
# small request socket in the listener's table, not a full one); then **ESTABLISHED** and the
# closing states. `skc` stands for *sock_common*: the lookup returns any socket, the request
# and time-wait minisockets included. `bpf_sk_lookup_tcp` returns *full* sockets only: for a
# request socket it returns its listener, so the handshake's ACK counts under LISTEN, and a
# TIME_WAIT minisocket is no full socket at all, so it finds nothing there.
#
# What XDP cannot do is go further. `bpf_tcp_sock()`, which turns a socket into its TCP figures,
# is not offered at XDP, and the verifier says so (with the course's hint). The verifier also
# keeps count of references: a socket the lookup returned must be released on every path, or the
# program is refused. The second verdict is your file with `xdp_tcp_seen()`'s
# `bpf_sk_release()` line taken out (a small program of the same shape if yours has none yet).

# %%
XDP_CWND = """\
#include "tcp.h"

int xdp_cwnd(struct xdp_md *ctx)
{
	struct bpf_sock_tuple any = {};  /* which socket does not matter: the verifier decides first */
	struct bpf_sock *socket = bpf_skc_lookup_tcp(ctx, &any, sizeof(any.ipv4), BPF_F_CURRENT_NETNS, 0);
	struct bpf_tcp_sock *figures;
	__u32 cwnd = 0;

	if (!socket)
		return XDP_PASS;
	figures = bpf_tcp_sock(socket);  /* the congestion window, at XDP? */
	if (figures)
		cwnd = figures->snd_cwnd;
	bpf_sk_release(socket);
	return cwnd > 10 ? XDP_DROP : XDP_PASS;
}
"""
xdp_tcp_sock_says = verifier_says(XDP_CWND, "xdp_cwnd", "xdp", "xdp_cwnd.c")
print(xdp_tcp_sock_says, end="\n\n")
release = next((line for line in seen_fn.splitlines(keepends=True) if "bpf_sk_release(" in line), "")
if release:
    unreleased = text.replace(seen_fn, seen_fn.replace(release, "", 1))
    print(verifier_says(unreleased, "xdp_tcp_seen", "xdp", source.name))
else:
    print("(your xdp_tcp_seen() releases no socket yet: the lesson on a small program)")
    print(verifier_says(XDP_CWND.replace("\tbpf_sk_release(socket);\n", "").replace(
        "\tfigures = bpf_tcp_sock(socket);", "\tfigures = 0;"), "xdp_cwnd", "xdp", "xdp_cwnd.c"))

# %% [markdown]
# ## Step 2 · What TC can see
#
# At TC the segment has an `sk_buff`, and the same lookup is followed by `bpf_tcp_sock(sk)`:
# `struct bpf_tcp_sock` holds the connection's congestion window, smoothed RTT (kept ×8, in µs),
# retransmissions, sequence numbers. `tc_tcp_flows()` records them per flow each time a segment
# arrives from the client. The client asks for 3 MB while a dropper on the client's veth loses
# every 40th data segment (8 at most), so the server retransmits; one more byte from the client
# makes TC read the figures as they stand at the end. `ss` reads the same socket a moment later.

# %%
BULK = 3_000_000
tc = parts["tc_tcp_flows"]
with net.attached(tc), net.lossy(), net.connection(wanted=BULK) as client:
    net.settle()  # the client's last ACKs out on their own first
    client.sendall(b"!")
    net.settle()
    tc_port = client.getsockname()[1]
    tc_ss = next((s for s in net.sockets() if s.peer[1] == tc_port), None)
    tc_view = flows(tc, "tc_flows").get(tc_port)


tc_row = figures(tc_view.state, tc_view.snd_cwnd, tc_view.srtt_us, tc_view.total_retrans) if tc_view else NONE
ss_row = ss_figures(tc_ss)
show(["connection from port " + str(tc_port), "state", "cwnd (segments)", "RTT (ms)", "retransmitted"],
     [["`tc_flows` (TC)", *tc_row], ["`ss` (the kernel)", *ss_row]])

# %% [markdown]
# Both read the same `struct tcp_sock`, a moment apart: the state and the retransmissions agree
# exactly, the window and the RTT closely (both are smoothed, and a window may grow between the
# last ACK TC saw and `ss`'s read). TC can read the figures because its program has a socket in
# hand *and* the helper that opens it; XDP has the first, not the second.
#
# ## Step 3 · State passed down to XDP through a map
#
# **sock_ops** is not a packet hook: the kernel calls it from inside TCP, with the socket itself
# as the context (`struct bpf_sock_ops`), at moments it chooses: when a connection is
# established, and, once the program asks with `bpf_sock_ops_cb_flags_set()`, at every state
# change, every RTT sample and every retransmission. `sockops_flows()` writes what it learns
# into `flow_states`, under the same `struct flow` key an XDP program builds from a segment.
# Three connections: one closed by the client first, one by the server first, one still open.

# %%
sockops = parts["sockops_flows"]
ended = {net.exchange(wanted=1000, close=False): "the client closed first",
         net.exchange(wanted=1000, close=True): "the server closed first"}
net.settle()
with net.connection(wanted=BULK) as client:
    net.settle()  # the client's last ACKs out on their own first
    client.sendall(b"!")
    net.settle()
    ended[client.getsockname()[1]] = "still open"
    kernel = {s.peer[1]: s for s in net.sockets()}
    recorded = flows(sockops, "flow_states")
rows = []
for port, how in ended.items():
    got, ss = recorded.get(port), kernel.get(port)
    mine = figures(got.state, got.snd_cwnd, got.srtt_us, got.retransmits) if got else NONE
    pairs = zip(mine, ss_figures(ss), strict=True)
    rows.append([port, how, *(f"{a} / {b}" for a, b in pairs)])
show(["port", "connection", "state (sock_ops / ss)", "cwnd", "RTT (ms)", "retransmitted"], rows)
server_closed = recorded.get(next(iter(p for p, how in ended.items() if how.startswith("the server"))))

# %% [markdown]
# The open connection's figures are `ss`'s as of the program's last callback: nobody had to send
# a segment to refresh them, the kernel called the program. The window may still have grown after
# that callback (the ACK that gave the last RTT sample grows it afterwards, by many segments in
# slow start), so it can trail `ss`'s. Closed connections stay in the map (`ss` shows
# only live sockets; a real program would delete the entry at CLOSE). And where `ss` shows the
# server-closed connection in **TIME_WAIT**, sock_ops says **CLOSE**: entering TIME_WAIT, the
# kernel moves the full socket to CLOSE (the last callback the program gets) and hands the
# connection to a time-wait minisocket, which has no sock_ops callbacks at all.
#
# Now the report's question, exactly: `xdp_flow_gate()` runs at XDP, looks each segment's flow
# up in `flow_states` (written by sock_ops, at another hook) and adds the segment's payload to
# that state's slot of `bytes_by_state`. A client sends a known number of bytes:

# %%
gate = parts["xdp_flow_gate"]
data = b"g" * 54_321
with net.counting(gate, "bytes_by_state") as gated:
    net.exchange(wanted=10, send=data)
sent = len(data) + len(b"10\n")  # the request line, then the data
show(["the client sent", "`bytes_by_state` gained, by the state sock_ops recorded"],
     [[f"{sent:,} bytes", ", ".join(f"{state}: {n:,}" for state, n in gated.items()) or "nothing"]])

# %% [markdown]
# Every byte was counted under ESTABLISHED, a state XDP read from a map that a program at
# another hook keeps up to date. XDP could gate, steer or rate-limit by any figure sock_ops can
# see (state, RTT, window, retransmissions): TCP state does reach XDP, through a map.
#
# ## Step 4 · A stateless shield for a stateful protocol
#
# A SYN flood fills a listener's queue of half-open connections with handshakes nobody will
# finish, and real clients are dropped. SYN cookies are TCP's way out: the SYN-ACK's sequence
# number encodes the handshake (MSS, time), signed with a secret of the listener, and the kernel
# keeps *nothing* until an ACK comes back with the cookie plus one. `bpf_tcp_gen_syncookie()`
# makes the kernel's own cookie at XDP, with the listener's secret, so `xdp_syn_shield()` turns
# every SYN into its SYN-ACK in place and sends it back (`XDP_TX`) before any `sk_buff` exists;
# the kernel then accepts the client's ACK as if it had sent the cookie itself, and
# `bpf_tcp_check_syncookie()` lets the shield drop forged ACKs early. The only TCP state it reads
# is the listener's. (On Linux 6.1 to 6.18 the helper needs `net.ipv4.tcp_syncookies` at 2,
# cookies for every SYN: `net.always_cookies()` sets it for the shield's runs.)
#
# A flood of spoofed SYNs (from addresses of the client's subnet that nobody holds, so their
# SYN-ACKs go unanswered), and once it is under way (200 SYNs in), a thread that connects 20 real
# clients one after the other, each asking for 1000 bytes. The flood lasts 3000 SYNs, and longer
# if the clients are still at it: a real flood does not stop for them. A client waits 5 s for
# the server, and the thread stops at the first that fails: the next ones would wait as long.
# Then the same flood without the shield, and with the kernel's own SYN cookies off
# (`net.ipv4.tcp_syncookies` 0, as on a host that never turned them on): the listener alone.

# %%
shield = parts["xdp_syn_shield"]
FLOOD_SYNS, CLIENTS = 3000, 20
KERNEL_SAYS = ("TcpExtListenDrops", "TcpExtListenOverflows", "TcpExtSyncookiesRecv", "TcpExtSyncookiesSent")
SLOTS = {0: "SYNs answered", 1: "cookies valid", 2: "cookies forged"}  # the shield map's slots


def flood(program=None) -> dict:
    """The flood and the real clients at once, `program` attached if given: what each side counted."""
    before, kernel = (program.percpu_sums("shield") if program else {}), net.settle()
    with net.attached(program) if program else contextlib.nullcontext():
        result = net.flood_with_clients(FLOOD_SYNS, CLIENTS)
        after = net.settle()
    shielded = grown(before, program.percpu_sums("shield")) if program else {}
    return {"SYNs sent": result.sent, **{name: shielded.get(slot, 0) for slot, name in SLOTS.items()},
            "clients connected": result.connected, **{k: after[k] - kernel[k] for k in KERNEL_SAYS},
            "seconds": round(result.seconds, 1), "first failure": result.failure or "—"}


with net.always_cookies():
    with_shield = flood(shield)
sysctl(net.server_netns, "net.ipv4.tcp_syncookies", 0)
try:
    without = flood()
finally:
    sysctl(net.server_netns, "net.ipv4.tcp_syncookies", 1)  # the default again
show(["", "with the shield", "without it (no cookies)"],
     [[k, v, "—" if k in SLOTS.values() else without[k]] for k, v in with_shield.items()])

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for ax, what, title in zip(axes, ("TcpExtListenDrops", "clients connected"),
                           ("SYNs the listener dropped", f"real clients connected (of {CLIENTS})"),
                           strict=True):
    labels = [f"XDP shield\n{with_shield['SYNs sent']:,} SYNs",
              f"no shield, no cookies\n{without['SYNs sent']:,} SYNs"]
    bars = ax.bar(labels, [with_shield[what], without[what]], color=["tab:green", "tab:red"])
    ax.bar_label(bars)
    ax.set_title(title)
    ax.margins(y=0.2)
fig.suptitle(f"A SYN flood while {CLIENTS} real clients connect, one after the other")
fig.tight_layout()
plt.show()

# %% [markdown]
# Without the shield the listener's queue (16 half-open connections here, as a busy server's
# would be) fills within the first SYNs, and every later SYN is dropped, real clients' included.
# A half-open connection keeps its place until its SYN-ACK fails (here in about 3 s, when the
# server gives up finding the spoofed address on the link; on the Internet after a minute of
# SYN-ACK retries), and the flood takes every freed place at once. With the shield the flood
# never reaches the listener: the kernel counts cookies received (one per real client) and none
# sent, as the shield sent them all. The kernel's own cookies would save the clients too; the
# shield does the same work before the stack has spent anything on the SYN. (A shield that passes
# every SYN, as the starter's does, leaves the answers to those: `TcpExtSyncookiesSent` shows it.)
#
# What that costs per SYN, timed with test-run beside an empty XDP program, one run per call (the
# SYN-ACK replaces the SYN, so repeats would time something else); inside the server's
# namespace, where the lookup finds the listener, and with cookies on.

# %%
syn = segment("S", sport=42000, seq=7777)
RUNS = 5000
with net.always_cookies():
    answer = net.test_run(shield, syn)
    with in_netns(net.server_netns):
        floor = measure.single_run_floor_ns("xdp", syn, RUNS)
        per_syn = measure.single_run_ns(shield.fd, syn, RUNS)
above = round(per_syn - floor)
print(f"a SYN through the shield: {verdict('xdp', answer.verdict)}")
print(f"floor {floor:.0f} ns, shield {per_syn:.0f} ns: {above} ns per SYN above the floor")
if verdict("xdp", answer.verdict) != "XDP_TX":
    print("Your shield passes the SYN to the kernel (it does not answer yet): that is the cost of passing.")

# %% [markdown]
# ## Findings
#
# Built from what the cells above measured:

# %%
segments_counted, in_segs = sum(counted["skc"][0].values()), counted["skc"][1]
tc_said = (f"cwnd {tc_row[1]} (ss {ss_row[1]}), RTT {tc_row[2]} ms (ss {ss_row[2]}), "
           f"{tc_row[3]} retransmitted (ss {ss_row[3]})")
refused = "refused" if xdp_tcp_sock_says.startswith("rejected") else "accepted (!)"
show(["hook", "TCP state it can read", "how", "measured here"], [
    ["XDP", "the socket's state only: " + (", ".join(counted["skc"][0]) or "nothing yet"),
     "`bpf_skc_lookup_tcp()` → `struct bpf_sock`; `bpf_tcp_sock()` " + refused,
     f"{segments_counted} segments counted by state, the kernel received {in_segs}; "
     f"an ACK in TIME_WAIT: {probes['skc']}"],
    ["TC", "the state, and the connection's cwnd, RTT, retransmissions",
     "the same lookup, then `bpf_tcp_sock()` → `struct bpf_tcp_sock`", tc_said],
    ["sock_ops", "every state change, RTT sample and retransmission, as callbacks; not TIME_WAIT",
     "`bpf_sock_ops_cb_flags_set()`; the socket is the context",
     "a connection in TIME_WAIT (ss) is " + (STATE_NAMES.get(server_closed.state, "?")
                                            if server_closed else "not recorded")],
    ["XDP, via a map", "whatever sock_ops wrote", "`flow_states`, keyed by `struct flow`",
     f"{sent:,} bytes sent; counted: " + (", ".join(f"{s} {n:,}" for s, n in gated.items()) or "none")],
    ["XDP (SYN shield)", "the listener's, and its cookie secret",
     "`bpf_tcp_gen_syncookie()`, `bpf_tcp_check_syncookie()`",
     f"{with_shield['SYNs answered']} SYNs answered, {with_shield['TcpExtListenDrops']} listener drops "
     f"(without: {without['TcpExtListenDrops']}); {above} ns per SYN above the floor"],
])

# %% [markdown]
# So the report's question has an answer: yes. XDP reads a socket's *state* itself, with a
# lookup, and any figure of the connection through a map that sock_ops keeps. And §4.4's worry
# has a partial one: a whole TCP server at XDP would still be hard, but a stateless piece of one,
# the SYN cookie, fits in an XDP program, with the kernel's own secret.
#
# ## Clean up
#
# The network (namespaces, the server, its cgroup) and the programs, in reverse.

# %%
net.close()
parts.close()
print("closed")
