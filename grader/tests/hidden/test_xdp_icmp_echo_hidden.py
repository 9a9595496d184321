"""Instructor-only tests of xdp-icmp: graded in batches, absent from the student release.

They live in grader/tests/hidden/, which the release leaves out; the runner marks every test
found here as hidden, so Gradescope shows it only once grades are published. The program is the
one the public suite loaded (see the `program` fixture): hidden tests cost no second compile.
"""

from __future__ import annotations

from echo_suite import expect_reply, server  # noqa: F401 (server: the fixture the test uses)
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

from bpflab import packets
from bpflab.course.labs import Lab
from bpflab.packets import CLIENT_IPV4, CLIENT_IPV6, SERVER_IPV4, SERVER_IPV6
from bpflab.programs import Program
from grader.checks import points

LAB = "xdp-icmp"


@points(2)
def test_unusual_but_valid_requests_get_the_exact_reply(server: Program, lab: Lab) -> None:  # noqa: F811
    """Valid requests with unusual headers (TTL 1, DSCP/ECN, DF, extreme ids) get the exact reply."""
    ones = b"\xff" * 64  # every payload word 0xffff: the checksum sums carry at every step
    v4 = packets.ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4)
    v6 = packets.ether() / IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6)
    cases = {
        "an echo request with TTL 1": packets.ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4, ttl=1)
        / ICMP(id=1, seq=1) / packets.payload(56),
        "an echo request with DSCP and ECN bits set": packets.ether()
        / IP(src=CLIENT_IPV4, dst=SERVER_IPV4, tos=0xB9) / ICMP(id=2, seq=2) / packets.payload(56),
        "an echo request with DF set": packets.ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4, flags="DF")
        / ICMP(id=3, seq=3) / packets.payload(56),
        "an echo request with id 0xffff and sequence 0": v4 / ICMP(id=0xFFFF, seq=0) / packets.payload(56),
        "an echo request with an all-ones payload": v4 / ICMP(id=0xFFFF, seq=0xFFFF) / ones,
        "an ICMPv6 echo request with hop limit 1": packets.ether()
        / IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6, hlim=1) / ICMPv6EchoRequest(id=1, seq=1),
        "an ICMPv6 echo request with a traffic class and a flow label": packets.ether()
        / IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6, tc=0xB9, fl=0xABCDE) / ICMPv6EchoRequest(id=2, seq=2),
        "an ICMPv6 echo request with an all-ones payload": v6 / ICMPv6EchoRequest(id=0xFFFF, seq=0xFFFF,
                                                                                   data=ones),
    }
    for what, frame in cases.items():
        expect_reply(server, lab.hook, frame, what)
