"""Lab 0, hello-xdp: the program counts packets per IP protocol and passes every one."""

from __future__ import annotations

from scapy.packet import Packet, raw

from bpflab import packets, testrun
from bpflab.programs import Program
from bpflab.topology import Topology
from bpflab.verdicts import XDP_PASS, verdict
from grader.checks import delta, expect, points

LAB = "hello-xdp"
COUNTS = "proto_count"
ICMP, TCP, UDP, ICMPV6 = 1, 6, 17, 58


def counts(program: Program) -> dict[int, int]:
    try:
        return program.percpu_sums(COUNTS)
    except KeyError:
        expect(False, f"The program has no map called {COUNTS}: keep the map the starter declares.")
        raise


def run_and_count(program: Program, frame: Packet | bytes) -> dict[int, int]:
    """Run one frame through the program; check it passed untouched; return the count changes."""
    data = raw(frame)
    before = counts(program)
    result = testrun.run(program.fd, data)
    seen = packets.describe(data)
    expect(
        result.verdict == XDP_PASS,
        f"Sent {seen}: the program returned {verdict('xdp', result.verdict)}, "
        "but every frame must be passed (XDP_PASS).",
    )
    expect(result.packet == data, f"Sent {seen}: the program changed the frame; it must only count.")
    return delta(before, counts(program))


@points(2)
def test_counts_icmp(program: Program) -> None:
    """An ICMPv4 echo request is counted once under protocol 1, and passed untouched."""
    changed = run_and_count(program, packets.icmp_echo_v4())
    expect(changed == {ICMP: 1}, f"After one ICMPv4 echo request, the counters changed by {changed}; "
           f"expected {{1: 1}} (one more under protocol 1, ICMP).")


@points(2)
def test_counts_each_protocol(program: Program) -> None:
    """TCP, UDP and ICMPv6 over IPv4 and IPv6 are each counted under their own protocol number."""
    cases = [
        ("TCP over IPv4", packets.tcp_v4(), TCP),
        ("UDP over IPv4", packets.udp_v4(), UDP),
        ("UDP over IPv6", packets.udp_v6(), UDP),
        ("ICMPv6 echo request", packets.icmp_echo_v6(), ICMPV6),
    ]
    for name, frame, proto in cases:
        changed = run_and_count(program, frame)
        expect(changed == {proto: 1}, f"After one {name} frame the counters changed by {changed}; "
               f"expected {{{proto}: 1}}.")


@points(1)
def test_counts_only_ip(program: Program) -> None:
    """ARP and frames too short to hold an IP header are passed and not counted; whole ones are."""
    whole = raw(packets.icmp_echo_v4())
    whole6 = raw(packets.udp_v6())
    too_short = [*packets.truncations(whole[:34]),  # 14..33 bytes: Ethernet + IPv4 is 34
                 *packets.truncations(whole6[:54])]  # 14..53 bytes: Ethernet + IPv6 is 54
    for frame in [raw(packets.arp_request()), *too_short]:
        changed = run_and_count(program, frame)
        expect(not changed, f"Sent {packets.describe(frame)}: the counters changed by {changed}, "
               "but only IP packets with a whole IP header may be counted.")
    for frame, proto, name in ((whole[:34], ICMP, "IPv4"), (whole6[:54], UDP, "IPv6")):
        changed = run_and_count(program, frame)
        expect(changed == {proto: 1}, f"A frame that ends right after a whole {name} header must "
               f"still be counted under its protocol; the counters changed by {changed}.")


@points(3)
def test_ping_counted_and_answered(attached: Program, topology: Topology) -> None:
    """Attached to a real interface: every ping is counted, and the kernel still answers it."""
    before = counts(attached)
    result = topology.ping(count=10)
    changed = delta(before, counts(attached))
    expect(result.received == 10, f"Pinged the server 10 times; {result.received} replies came back. "
           f"The program must pass the requests to the kernel.\n{result.output}")
    expect(changed.get(ICMP) == 10, f"Pinged the server 10 times; the ICMP counter grew by "
           f"{changed.get(ICMP, 0)}, expected 10.")


@points(2)
def test_ping6_counted_and_answered(attached: Program, topology: Topology) -> None:
    """The same over IPv6: every ICMPv6 echo request is counted and answered by the kernel."""
    before = counts(attached)
    result = topology.ping(count=10, ipv6=True)
    changed = delta(before, counts(attached))
    expect(result.received == 10, f"Pinged the server's IPv6 address 10 times; {result.received} "
           f"replies came back.\n{result.output}")
    # The client may also send a few ICMPv6 reports of its own (MLD), hence "at least".
    expect(changed.get(ICMPV6, 0) >= 10, f"Pinged over IPv6 10 times; the ICMPv6 counter grew by "
           f"{changed.get(ICMPV6, 0)}, expected at least 10.")
