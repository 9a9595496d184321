"""The echo labs' oracle: the reply scapy builds and the fast one the fuzzers use agree."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw

from bpflab import fuzz, packets
from bpflab.oracles import echo
from bpflab.packets import SERVER_IPV4, SERVER_IPV6
from bpflab.topology import Topology, run_in
from bpflab.wire import Wire

SEEDS = [raw(packets.icmp_echo_v4(size)) for size in (0, 1, 56, 1472)] + \
    [raw(packets.icmp_echo_v6(size)) for size in (0, 1, 56, 1452)]


def test_scapy_and_quick_replies_agree_on_fuzzed_frames():
    valid = 0
    for frame in [*SEEDS, *fuzz.frames(SEEDS, 5000, seed=1)]:
        slow = echo.expected_reply(frame, SERVER_IPV4, SERVER_IPV6)
        assert slow == echo.quick_reply(frame, SERVER_IPV4, SERVER_IPV6), frame.hex()
        valid += slow is not None
    assert valid > 500  # the fuzzer does reach valid requests


def test_reply_is_the_request_turned_around():
    request = packets.icmp_echo_v4(56, ident=7, seq=9)
    reply = Ether(echo.expected_reply(raw(request), SERVER_IPV4, SERVER_IPV6))
    assert (reply.src, reply.dst) == (request.dst, request.src)
    assert (reply[IP].src, reply[IP].dst, reply[IP].ttl) == (SERVER_IPV4, packets.CLIENT_IPV4, 64)
    assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 7, 9)
    assert reply[ICMP].load == request[ICMP].load


def test_what_the_kernel_would_not_answer_gets_no_reply():
    request = packets.icmp_echo_v4()
    elsewhere = request.copy()
    elsewhere[IP].dst = "192.0.2.99"
    assert echo.expected_reply(raw(elsewhere), SERVER_IPV4, SERVER_IPV6) is None
    damaged = packets.damaged(request, ICMP, "chksum")
    assert echo.expected_reply(damaged, SERVER_IPV4, SERVER_IPV6) is None


def test_fix_checksums_makes_a_mutated_request_valid_again():
    frame = bytearray(packets.damaged(packets.icmp_echo_v4(), Raw, "load"))
    assert echo.expected_reply(bytes(frame), SERVER_IPV4, SERVER_IPV6) is None
    packets.fix_checksums(frame)
    assert echo.expected_reply(bytes(frame), SERVER_IPV4, SERVER_IPV6) is not None


def test_same_reply_accepts_only_the_two_zeros_of_the_icmp_checksum():
    """0x0000 for 0xffff in the ICMP checksum (v4 or v6), and nowhere else in the frame."""
    for request in (packets.icmp_echo_v4(0, ident=0, seq=0), packets.icmp_echo_v6(0, ident=0, seq=0)):
        reply = bytearray(echo.expected_reply(raw(request), SERVER_IPV4, SERVER_IPV6))
        at = echo.icmp_checksum_offset(bytes(reply))
        other = bytearray(reply)
        other[at : at + 2] = b"\xff\xff" if reply[at : at + 2] == b"\0\0" else b"\0\0"
        assert echo.same_reply(bytes(other), bytes(reply)) == (reply[at : at + 2] in (b"\0\0", b"\xff\xff"))
        moved = bytearray(reply)
        moved[at - 2 : at] = b"\xff\xff" if reply[at - 2 : at] == b"\0\0" else b"\0\0"  # type and code
        assert not echo.same_reply(bytes(moved), bytes(reply))
    assert not echo.same_reply(b"\x01\x02", b"\x01\x02\x03")


# Sources and whether the oracle answers them: ordinary remote ones, yes; martians and the
# server's own addresses, never. 0.0.0.0/8, :: and IPv4-mapped sources are answered by some
# kernels (Linux 6.18 here, given a route) and dropped by others: a program passes them, and
# the kernel that runs decides, so a server never answers what its own kernel would not.
SOURCES_V4 = {"0.1.2.3": False, "127.0.0.1": False, "224.0.0.1": False, "255.255.255.255": False,
              SERVER_IPV4: False, "198.51.100.7": True, packets.CLIENT_IPV4: True}
SOURCES_V6 = {"::": False, "::1": False, "ff02::1": False, "::ffff:192.0.2.1": False,
              SERVER_IPV6: False, "2001:db8:1::7": True, packets.CLIENT_IPV6: True}


def test_the_oracle_answers_the_sources_the_kernel_answers():
    """Each source sent to the kernel's own echo over a veth, with a route and a permanent
    neighbour for every address (so that only the kernel's source rules decide): the oracle
    answers none that the kernel does not, and every ordinary source."""
    with Topology() as topo:
        server, client = topo.server, topo.client
        topo.kernel_echo(True)
        for family in ("-4", "-6"):
            run_in(server.netns, ["ip", family, "route", "replace", "default", "dev", server.ifname])
        for source in (*SOURCES_V4, *SOURCES_V6):  # some martians are refused here too: no matter
            run_in(server.netns, ["ip", "neigh", "replace", source, "lladdr", client.mac,
                                  "nud", "permanent", "dev", server.ifname])
        to_server = Ether(src=client.mac, dst=server.mac)
        fence = raw(to_server / IP(src=client.ipv4, dst=server.ipv4) / ICMP(id=echo.FENCE_ID))
        requests = {source: to_server / IP(src=source, dst=server.ipv4) / ICMP(id=1) / packets.payload(8)
                    for source in SOURCES_V4}
        requests |= {source: to_server / IPv6(src=source, dst=server.ipv6) / ICMPv6EchoRequest(id=1)
                     for source in SOURCES_V6}
        with Wire(client.netns, client.ifname) as wire:
            for source, request in requests.items():
                frame = raw(request)
                came = wire.unanswered(frame, fence, echo.is_fence_reply)
                kernel = any(echo.is_echo_reply(f) for f in came)
                oracle = echo.expected_reply(frame, server.ipv4, server.ipv6, server.mac) is not None
                assert oracle == {**SOURCES_V4, **SOURCES_V6}[source], source
                assert kernel or not oracle, f"the oracle answers {source}, which the kernel does not"


