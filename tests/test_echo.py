"""The echo labs' oracle: the reply scapy builds and the fast one the fuzzers use agree."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw

from bpflab import fuzz, packets
from bpflab.oracles import echo
from bpflab.packets import SERVER_IPV4, SERVER_IPV6

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


def test_same_reply_accepts_only_the_two_zeros_of_a_checksum():
    assert echo.same_reply(b"\x01\x00\x00\x02", b"\x01\xff\xff\x02")
    assert not echo.same_reply(b"\x01\x00\x01\x02", b"\x01\xff\xff\x02")
    assert not echo.same_reply(b"\x01\x02", b"\x01\x02\x03")
