"""Instructor-only tests of tcp-state: graded in batches, absent from the student release.

The parts are the ones the public suite loaded (the `parts` fixture); the network is built again
for this module (the `net` fixture, imported from the public suite).
"""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from test_tcp_state import cookies, expect_untouched, net, part, working_seen, working_shield  # noqa: F401

from bpflab import packets
from bpflab.packets import CLIENT_IPV6, SERVER_IPV6
from bpflab.parts import Parts
from bpflab.services.tcp_service import PORT
from bpflab.tcp_state import TcpLab, per_state, segment
from grader.checks import expect, points

LAB = "tcp-state"


@points(1)
def test_xdp_leaves_other_traffic_alone(parts: Parts, net: TcpLab) -> None:  # noqa: F811
    """Step 1: UDP, ICMP, IPv6 and fragments pass untouched and are not counted."""
    program = part(parts, "xdp_tcp_seen")
    working_seen(net, program)
    fragment = Ether(segment("S", sport=44000))
    fragment[IP].flags, fragment[IP].frag = "MF", 0
    others = {
        "a UDP datagram": packets.udp_v4(),
        "an ICMP echo request": packets.icmp_echo_v4(),
        "a SYN over IPv6": packets.ether() / IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6) / TCP(dport=PORT,
                                                                                            flags="S"),
        "the first fragment of a SYN": fragment,
    }
    before = per_state(program, "seen")
    for what, frame in others.items():
        expect_untouched(net, program, bytes(frame), what)
    changed = {k: v for k, v in per_state(program, "seen").items() if v != before.get(k, 0)}
    expect(not changed, f"Frames that are not whole IPv4 TCP segments were counted: {changed}.")


@points(1)
def test_shield_leaves_closed_ports_and_data_to_the_kernel(parts: Parts, net: TcpLab,  # noqa: F811
                                                           cookies: None) -> None:  # noqa: F811
    """Step 4: a SYN to a closed port, with data, or for another MAC goes to the kernel untouched."""
    program = part(parts, "xdp_syn_shield")
    working_shield(net, program)
    expect_untouched(net, program, segment("S", sport=44001, dport=9), "a SYN to a port nobody listens on")
    expect_untouched(net, program, segment("S", sport=44002, data=b"early data"), "a SYN that carries data")
    elsewhere = Ether(segment("S", sport=44003))
    elsewhere.dst = "02:00:00:00:00:99"
    expect_untouched(net, program, bytes(elsewhere), "a SYN in a frame for another host's MAC")
