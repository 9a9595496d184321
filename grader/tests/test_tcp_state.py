"""Lab tcp-state: which TCP state each hook can see, how it reaches XDP, and SYN cookies at XDP.

Every figure a program reports is checked against the kernel's own view: `ss -tinH` (state,
cwnd, RTT, retransmissions) and `nstat` (segments received, listen drops, cookies) in the
server's namespace. Traffic is real: the lab's TCP server in a cgroup of the run's own, Python
clients in the client namespace, losses made by a dropper on the client's veth. Crafted
segments go through test-run from inside the server's namespace, where the socket lookups find
the server's sockets. Every pass-through test first checks that its program does its job:
passing everything is what the starter does, and it earns nothing.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from bpflab.oracles.tcp_kernel import STATE_NAMES, Socket
from bpflab.packets import CLIENT_IPV4, CLIENT_MAC, SERVER_IPV4, SERVER_MAC, damaged
from bpflab.parts import Parts
from bpflab.programs import Program
from bpflab.services.tcp_service import PORT
from bpflab.tcp_state import TcpLab, flows, per_state, segment
from bpflab.verdicts import TC_ACT_OK, XDP_DROP, XDP_PASS, XDP_TX, verdict
from grader.checks import delta, expect, fail, points

LAB = "tcp-state"
BULK = 3_000_000  # bytes the server sends in the figures tests: long enough to grow a window
CWND_SLACK = 0.10  # cwnd: within 10% (2 segments at least) of ss, read a moment later
RTT_SLACK = 0.5  # RTT: within half of ss's (0.2 ms at least): both are smoothed, a sample apart
INITIAL_WINDOW = 10  # segments: Linux's first congestion window
CALLBACK_RTT_FACTOR = 5  # a callback's RTT: of ss's order (at most 5 times, 0.2 ms at least)
FLOOD_SYNS = 3000
FLOOD_CLIENTS = 20
STATE = {name: slot for slot, name in STATE_NAMES.items()}


@pytest.fixture(scope="module")
def net(parts: Parts, tmp_path_factory: pytest.TempPathFactory):
    """The lab's network, with the submission's sock_ops program on the server's cgroup."""
    with TcpLab(tmp_path_factory.mktemp("tcp-state") / "server.log",
                sockops=parts.programs.get("sockops_flows")) as lab:
        yield lab


@pytest.fixture
def cookies(net: TcpLab):
    """SYN cookies always on for the test: bpf_tcp_gen_syncookie() makes none otherwise."""
    with net.always_cookies():
        yield


def part(parts: Parts, entry: str) -> Program:
    """A part's program; its refusal, or a warning about it, fails the test with the explanation."""
    program = parts[entry]  # raises the ProgramError: the test fails with its explanation
    if program.warnings:
        fail(f"{entry}() loads, but it will not do what it should:\n" + "\n".join(program.warnings))
    return program


def socket_of(net: TcpLab, port: int) -> Socket:
    """The server's socket for the client's `port`, as ss shows it."""
    found = [s for s in net.sockets() if s.peer[1] == port]
    assert found, f"the suite's own connection from port {port} is not in ss"
    return found[0]


def expect_verdict(net: TcpLab, program: Program, frame: bytes, wanted: int, what: str) -> bytes:
    """Test-run `frame` (inside the server's namespace); its verdict must be `wanted`."""
    result = net.test_run(program, frame)
    expect(result.verdict == wanted, f"For {what}, {program.name}() returned "
           f"{verdict(program.hook, result.verdict)}; expected {verdict(program.hook, wanted)}.")
    return result.packet


def expect_untouched(net: TcpLab, program: Program, frame: bytes, what: str) -> None:
    passed = XDP_PASS if program.hook == "xdp" else TC_ACT_OK
    packet = expect_verdict(net, program, frame, passed, what)
    expect(packet == frame, f"{program.name}() passed {what}, but changed it: pass it untouched.")


def malformed(sport: int) -> list[tuple[bytes, str]]:
    """Broken SYNs to the listener, each of which the kernel drops."""
    syn = segment("S", sport=sport, seq=99)
    return [
        (damaged(syn, TCP, "chksum"), "a SYN with a wrong TCP checksum"),
        (segment("S", sport=sport, options=[], dataofs=4), "a SYN whose data offset is 4 (16 bytes)"),
        (segment("S", sport=sport, options=[], dataofs=15), "a SYN whose options run past the frame's end"),
        (syn[: len(syn) - 6], "a SYN cut inside its options"),
        (syn[:14 + 20 + 10], "a SYN cut inside its TCP header"),
    ]


# -- Step 1: what XDP can see ------------------------------------------------------------------
@points(3)
def test_xdp_counts_every_segment_by_socket_state(parts: Parts, net: TcpLab) -> None:
    """Step 1: xdp_tcp_seen counts each arriving segment once, by its socket's state, as the kernel does."""
    program = part(parts, "xdp_tcp_seen")
    kernel = net.settle()
    with net.counting(program, "seen") as changed:
        for close in (False, True, False):
            net.exchange(wanted=20_000, send=b"d" * 3000, close=close)
    after_kernel = net.settle()
    arrived = after_kernel["TcpInSegs"] - kernel["TcpInSegs"]
    expect(sum(changed.values()) == arrived, f"Over 3 connections the kernel received {arrived} TCP "
           f"segments; seen counted {sum(changed.values())} ({changed}). Count each segment once, in "
           "the slot of its socket's state (slot 0 when there is no socket).")
    expect(changed.get("LISTEN") == 3, f"3 SYNs reached the listener; seen counted "
           f"{changed.get('LISTEN', 0)} under LISTEN. bpf_skc_lookup_tcp() finds the listener for a SYN; "
           "read its state.")
    expect(changed.get("NEW_SYN_RECV") == 3, f"3 handshakes ended with an ACK to a request socket; seen "
           f"counted {changed.get('NEW_SYN_RECV', 0)} under NEW_SYN_RECV. Use bpf_skc_lookup_tcp(), which "
           "finds request sockets too (bpf_sk_lookup_tcp gives the listener).")
    expect(changed.get("ESTABLISHED", 0) >= 3, f"Data arrived on 3 established connections; seen counted "
           f"{changed.get('ESTABLISHED', 0)} segments under ESTABLISHED.")


@points(2)
def test_xdp_sees_time_wait_and_no_socket(parts: Parts, net: TcpLab) -> None:
    """Step 1: a segment for a TIME_WAIT connection counts under TIME_WAIT; one to a closed port in slot 0."""
    program = part(parts, "xdp_tcp_seen")
    net.exchange(wanted=100, close=True)  # the server closes first: its side waits in TIME_WAIT
    net.settle()
    waiting = [s for s in net.sockets() if STATE_NAMES[s.state] == "TIME_WAIT"]
    assert waiting, "the suite's connection left no TIME_WAIT socket"
    port = waiting[-1].peer[1]
    before = per_state(program, "seen")
    expect_untouched(net, program, segment("A", sport=port, seq=5, ack=5), "an ACK for a TIME_WAIT socket")
    expect_untouched(net, program, segment("S", sport=41000, dport=9), "a SYN to a port nobody listens on")
    changed = delta(before, per_state(program, "seen"))
    expect(changed == {"TIME_WAIT": 1, "no socket": 1}, f"After an ACK for a connection in TIME_WAIT and a "
           f"SYN to a closed port, seen changed by {changed}; expected one under TIME_WAIT (a minisocket "
           "bpf_skc_lookup_tcp finds) and one under slot 0 (no socket).")


# -- Step 2: what TC can see -------------------------------------------------------------------
@points(4)
def test_tc_figures_are_the_kernels(parts: Parts, net: TcpLab) -> None:
    """Step 2: tc_tcp_flows reports a connection's state, cwnd, RTT and retransmissions as ss does."""
    program = part(parts, "tc_tcp_flows")
    with net.attached(program), net.lossy(), net.connection(wanted=BULK) as client:
        net.settle()  # the client's last ACKs out on their own first, not carried by the next segment
        client.sendall(b"!")  # one more segment from the client: TC reads the figures it finds
        net.settle()
        port = client.getsockname()[1]
        kernel = socket_of(net, port)
        view = flows(program, "tc_flows").get(port)
    assert kernel.retrans > 0, "the suite's dropper made no retransmission"
    expect(view is not None, f"tc_flows has no entry for the connection from port {port}: record each flow "
           "under struct flow, the client's address and port first (flow_of_segment).")
    expect_figures("tc_flows", view.state, view.snd_cwnd, view.srtt_us, view.total_retrans, kernel)


def expect_figures(table: str, state: int, cwnd: int, srtt_us: int, retrans: int, kernel: Socket) -> None:
    """A program's figures for a connection against ss's, within the suite's tolerances."""
    expect(state == kernel.state, f"{table} says the connection is {STATE_NAMES.get(state, state)}; ss says "
           f"{kernel.state_name}.")
    slack = max(2, CWND_SLACK * kernel.cwnd)
    expect(abs(cwnd - kernel.cwnd) <= slack, f"{table} says cwnd {cwnd}; ss says {kernel.cwnd} (within "
           f"{slack:.0f} is right).")
    rtt_ms, rtt_slack = srtt_us / 1000, max(0.2, RTT_SLACK * kernel.rtt_ms)
    expect(srtt_us > 0 and abs(rtt_ms - kernel.rtt_ms) <= rtt_slack, f"{table} says the RTT is {srtt_us} µs; "
           f"ss says {kernel.rtt_ms} ms (within {rtt_slack:.2f} ms is right). The kernel keeps srtt_us "
           "times 8: shift it right by 3.")
    expect(retrans == kernel.retrans, f"{table} says {retrans} segments were retransmitted; ss says "
           f"{kernel.retrans}.")


# -- Step 3: state passed down to XDP ----------------------------------------------------------
@points(3)
def test_sockops_records_each_connections_state(parts: Parts, net: TcpLab) -> None:
    """Step 3: sockops_flows keeps each connection's state, and its RTT and cwnd as callbacks see them."""
    program = part(parts, "sockops_flows")
    closed = [net.exchange(wanted=1000, close=server_first) for server_first in (False, True)]
    net.settle()
    with net.connection(wanted=BULK) as client:
        net.settle()
        client.sendall(b"!")
        net.settle()
        port = client.getsockname()[1]
        kernel = socket_of(net, port)
        states = flows(program, "flow_states")
    expect(port in states, f"flow_states has no entry for an open connection from port {port}: record it "
           "at BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB.")
    known = states[port]
    expect_callback_figures(known, kernel)
    for gone in closed:
        got = states.get(gone)
        said = STATE_NAMES.get(got.state, got.state) if got else "missing"
        expect(got is not None and got.state == STATE["CLOSE"], f"A closed connection (port {gone}) is "
               f"{said} in flow_states; expected CLOSE: ask for BPF_SOCK_OPS_STATE_CB_FLAG and record "
               "args[1], the new state.")


def expect_callback_figures(known, kernel: Socket) -> None:
    """sock_ops figures are those of the last callback: the window has grown since (a single ACK
    may grow it by many segments after the RTT callback it caused), so it must be past the
    initial window and not past ss's; the RTT must be a live one, of ss's order."""
    expect(known.state == kernel.state, f"flow_states says the connection is "
           f"{STATE_NAMES.get(known.state, known.state)}; ss says {kernel.state_name}.")
    expect(INITIAL_WINDOW < known.snd_cwnd <= kernel.cwnd + max(2, CWND_SLACK * kernel.cwnd),
           f"flow_states says cwnd {known.snd_cwnd}; after {BULK:,} bytes it must have grown past the "
           f"initial {INITIAL_WINDOW} segments, and be at most ss's {kernel.cwnd}: record skops->snd_cwnd "
           "at every RTT callback (BPF_SOCK_OPS_RTT_CB_FLAG).")
    rtt_ms = known.srtt_us / 1000
    expect(0 < rtt_ms <= CALLBACK_RTT_FACTOR * max(kernel.rtt_ms, 0.2), f"flow_states says the RTT is "
           f"{known.srtt_us} µs; ss says {kernel.rtt_ms} ms. The kernel keeps srtt_us times 8: shift it "
           "right by 3.")


@points(2)
def test_sockops_counts_retransmissions(parts: Parts, net: TcpLab) -> None:
    """Step 3: flow_states counts a connection's retransmitted segments as ss does."""
    program = part(parts, "sockops_flows")
    with net.lossy(), net.connection(wanted=BULK) as client:
        net.settle()
        client.sendall(b"!")
        net.settle()
        port = client.getsockname()[1]
        kernel = socket_of(net, port)
        known = flows(program, "flow_states").get(port)
    assert kernel.retrans > 0, "the suite's dropper made no retransmission"
    expect(known is not None, f"flow_states has no entry for the connection from port {port}.")
    expect(known.retransmits == kernel.retrans, f"flow_states counts {known.retransmits} retransmitted "
           f"segments; ss says {kernel.retrans}. Ask for BPF_SOCK_OPS_RETRANS_CB_FLAG and add args[1] "
           "(segments) when args[2] (error) is 0.")


@points(3)
def test_xdp_reads_state_from_the_map(parts: Parts, net: TcpLab) -> None:
    """Step 3: xdp_flow_gate adds each segment's data bytes to its flow's state from flow_states."""
    part(parts, "sockops_flows")
    program = part(parts, "xdp_flow_gate")
    data = b"g" * 54_321
    with net.counting(program, "bytes_by_state") as changed:
        net.exchange(wanted=10, send=data)
    sent = len(data) + len(b"10\n")  # the request line, then the data
    expect(changed == {"ESTABLISHED": sent}, f"A client sent {sent} bytes on an established connection; "
           f"bytes_by_state changed by {changed}. Look the flow up in flow_states with the key the "
           "sock_ops program writes, and add tcp_payload_len() to its state's slot.")


# -- Step 4: SYN cookies at XDP ----------------------------------------------------------------
def syn_ack_of(net: TcpLab, program: Program, syn: bytes) -> TCP:
    """The shield's answer to `syn`, test-run; it must be a SYN-ACK a client would take."""
    reply = Ether(expect_verdict(net, program, syn, XDP_TX, "a SYN to the listening port"))
    asked = Ether(syn)
    expect(reply.haslayer(TCP) and reply[TCP].flags == "SA", f"The shield answered a SYN with "
           f"{reply.summary()}; expected a SYN-ACK.")
    ip, tcp = reply[IP], reply[TCP]
    expect((reply.src, reply.dst, ip.src, ip.dst) == (SERVER_MAC, CLIENT_MAC, SERVER_IPV4, CLIENT_IPV4),
           "The SYN-ACK must go back where the SYN came from: MACs and addresses swapped.")
    expect((tcp.sport, tcp.dport, tcp.ack) == (PORT, asked[TCP].sport, asked[TCP].seq + 1),
           f"The SYN-ACK has ports {tcp.sport}->{tcp.dport} and ack {tcp.ack}; expected "
           f"{PORT}->{asked[TCP].sport} and the SYN's sequence number plus one ({asked[TCP].seq + 1}).")
    fresh = Ether(bytes(reply))
    del fresh[IP].chksum, fresh[TCP].chksum
    fresh = Ether(bytes(fresh))
    expect((ip.chksum, tcp.chksum) == (fresh[IP].chksum, fresh[TCP].chksum),
           "The SYN-ACK's IP or TCP checksum is wrong: the client's kernel would drop it.")
    return tcp


@points(3)
def test_shield_answers_with_a_cookie_the_kernel_accepts(parts: Parts, net: TcpLab, cookies: None) -> None:
    """Step 4: a SYN gets a valid SYN-ACK at XDP, and real clients connect through the cookie."""
    program = part(parts, "xdp_syn_shield")
    syn_ack_of(net, program, segment("S", sport=42000, seq=7777))
    with net.attached(program):
        before, kernel = program.percpu_sums("shield"), net.settle()
        for _ in range(3):
            try:
                net.exchange(wanted=5000, send=b"c" * 500)
            except OSError as exc:
                fail(f"A real client could not connect through the shield ({exc}): the kernel refused the "
                     "handshake's ACK, so the SYN-ACK's sequence number is not a cookie of its: use "
                     "bpf_tcp_gen_syncookie() with the listener's socket.")
        after = net.settle()
    answered = delta(before, program.percpu_sums("shield"))
    counted = ("TcpExtSyncookiesRecv", "TcpExtSyncookiesSent", "TcpPassiveOpens")
    cookies = {k: after[k] - kernel[k] for k in counted}
    expect(cookies == {"TcpExtSyncookiesRecv": 3, "TcpExtSyncookiesSent": 0, "TcpPassiveOpens": 3},
           f"3 clients connected; the kernel counted {cookies}: expected 3 cookies received, none of its own "
           "sent (the shield answers every SYN), 3 connections opened.")
    expect(answered.get(0) == 3, f"The shield's SYNS_ANSWERED counter moved by {answered.get(0, 0)}; "
           "expected 3.")


@points(2)
def test_shield_drops_forged_acks(parts: Parts, net: TcpLab, cookies: None) -> None:
    """Step 4: a handshake ACK whose cookie is forged is dropped at XDP; a valid one passes."""
    program = part(parts, "xdp_syn_shield")
    synack = syn_ack_of(net, program, segment("S", sport=42001, seq=1000))
    valid = segment("A", sport=42001, seq=1001, ack=synack.seq + 1)
    forged = segment("A", sport=42002, seq=1001, ack=(synack.seq + 12345) & 0xFFFFFFFF)
    expect_verdict(net, program, forged, XDP_DROP, "an ACK to the listener with a forged cookie")
    expect_verdict(net, program, valid, XDP_PASS, "the ACK that answers the shield's own SYN-ACK")


@points(3)
def test_syn_flood_does_not_reach_the_listener(parts: Parts, net: TcpLab, cookies: None) -> None:
    """Step 4: 3000 spoofed SYNs while 20 real clients connect: all 20 succeed, the listener drops nothing."""
    program = part(parts, "xdp_syn_shield")
    before, kernel = program.percpu_sums("shield"), net.settle()
    with net.attached(program):
        flood = net.flood_with_clients(FLOOD_SYNS, FLOOD_CLIENTS)
        after = net.settle()
    answered = delta(before, program.percpu_sums("shield")).get(0, 0)
    dropped = ("TcpExtListenDrops", "TcpExtListenOverflows", "TcpExtTCPReqQFullDrop")
    drops = {k: after[k] - kernel[k] for k in dropped}
    expect(not flood.failure, f"A real client failed during the flood ({flood.failure}): every client "
           "must connect while the shield answers the flood.")
    expect(not any(drops.values()), f"During the flood the listener dropped: {drops}. The shield must answer "
           "every SYN itself, so that none waits in the listener's queue.")
    expect(answered >= flood.sent + FLOOD_CLIENTS, f"{flood.sent} flood SYNs and {FLOOD_CLIENTS} real ones "
           f"arrived; the shield answered {answered}.")


# -- Every packet program: malformed segments pass untouched ---------------------------------------------
def working_seen(net: TcpLab, program: Program) -> None:
    before = per_state(program, "seen")
    expect_untouched(net, program, segment("S", sport=43000), "a SYN to the listener")
    expect(delta(before, per_state(program, "seen")) == {"LISTEN": 1}, "A SYN to the listener is not "
           "counted under LISTEN: the program must work before its pass-through is graded.")


def working_tc(net: TcpLab, program: Program) -> None:
    with net.connection(wanted=10) as client:
        port = client.getsockname()[1]
        expect_untouched(net, program, segment("A", sport=port, seq=1, ack=1), "an ACK on an open connection")
        expect(port in flows(program, "tc_flows"), "A segment of an open connection is not recorded in "
               "tc_flows: the program must work before its pass-through is graded.")


def working_gate(net: TcpLab, program: Program) -> None:
    before = per_state(program, "bytes_by_state")
    expect_untouched(net, program, segment("PA", sport=43001, data=b"12345"), "data of no connection")
    expect(delta(before, per_state(program, "bytes_by_state")) == {"no socket": 5}, "5 bytes of a connection "
           "flow_states does not know are not counted in slot 0: the program must work before its "
           "pass-through is graded.")


def working_shield(net: TcpLab, program: Program) -> None:
    syn_ack_of(net, program, segment("S", sport=43002))


def expect_malformed_untouched(net: TcpLab, program: Program) -> None:
    for frame, what in malformed(sport=43003):
        expect_untouched(net, program, frame, what)


@points(1)
def test_xdp_seen_passes_malformed_segments(parts: Parts, net: TcpLab) -> None:
    """Step 1: a segment the kernel drops (bad checksum or data offset, cut options) passes untouched."""
    program = part(parts, "xdp_tcp_seen")
    working_seen(net, program)
    expect_malformed_untouched(net, program)


@points(1)
def test_tc_passes_malformed_segments(parts: Parts, net: TcpLab) -> None:
    """Step 2: a segment the kernel drops (bad checksum or data offset, cut options) passes untouched."""
    program = part(parts, "tc_tcp_flows")
    working_tc(net, program)
    expect_malformed_untouched(net, program)


@points(1)
def test_gate_passes_malformed_segments(parts: Parts, net: TcpLab) -> None:
    """Step 3: a segment the kernel drops (bad checksum or data offset, cut options) passes untouched."""
    program = part(parts, "xdp_flow_gate")
    working_gate(net, program)
    expect_malformed_untouched(net, program)


@points(1)
def test_shield_passes_malformed_segments(parts: Parts, net: TcpLab, cookies: None) -> None:
    """Step 4: a SYN the kernel drops (bad checksum or data offset, cut options) passes untouched."""
    program = part(parts, "xdp_syn_shield")
    working_shield(net, program)
    expect_malformed_untouched(net, program)
