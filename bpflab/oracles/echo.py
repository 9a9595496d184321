"""User-space side of the ICMP echo labs: configure the program, and know the right answer.

`configure` fills the program's `server` map with the addresses it serves (bpf/include/echo.h),
by default the course topology's server (its veth has the fixed MAC `packets.SERVER_MAC`).
`expected_reply` is the reply a correct echo server sends for a frame, or None when it must
pass the frame to the kernel; the grader's checks and its fuzzer compare the program with it.
The rules are the kernel's own: a server must never answer what the kernel would not.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Padding, raw

from bpflab.packets import (
    ETH_HLEN,
    SERVER_IPV4,
    SERVER_IPV6,
    SERVER_MAC,
    fix_checksums,
    internet_checksum,
    ipv4_source_ok,
    ipv6_source_ok,
)

REPLY_TTL = 64
REPLIES_V4, REPLIES_V6 = 0, 1
IP_MF, IP_OFFSET = 0x2000, 0x1FFF
ICMPV6 = 58


def configure(program, ipv4: str = SERVER_IPV4, ipv6: str = SERVER_IPV6, mac: str = SERVER_MAC) -> None:
    """Tell the program which addresses are its own (key 0 of its `server` map)."""
    table = program.table("server")
    packed = socket.inet_pton(socket.AF_INET, ipv4) + socket.inet_pton(socket.AF_INET6, ipv6) + _mac(mac)
    table[ctypes.c_int(0)] = table.Leaf.from_buffer_copy(packed.ljust(ctypes.sizeof(table.Leaf), b"\0"))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _to_me(frame: bytes, mac: str) -> bool:
    """Only frames to the server's own MAC are answered (see eth_to_me in parsing.h)."""
    return frame[0:6] == _mac(mac)


def replies(program) -> tuple[int, int]:
    """(ICMPv4, ICMPv6) replies the program has counted, summed over CPUs."""
    counts = program.percpu_sums("replies")
    return counts.get(REPLIES_V4, 0), counts.get(REPLIES_V6, 0)


def _internet_checksum_ok(data: bytes) -> bool:
    """An intact packet's words, checksum included, sum to 0xffff: its checksum is then 0."""
    return internet_checksum(data) == 0


def _ipv4_request(frame: bytes, ipv4: str) -> bool:
    """Is `frame` an intact ICMPv4 echo request to `ipv4` that the kernel would answer?"""
    header = frame[14:34]
    if len(header) < 20 or header[0] != 0x45 or header[9] != 1:  # version 4, no options, ICMP
        return False
    total = int.from_bytes(header[2:4], "big")
    source = ipaddress.IPv4Address(header[12:16])
    if header[16:20] != socket.inet_aton(ipv4) or not ipv4_source_ok(source, ipv4):
        return False
    if int.from_bytes(header[6:8], "big") & (IP_MF | IP_OFFSET):
        return False
    if not _internet_checksum_ok(header) or total < 28 or 14 + total > len(frame):
        return False
    message = frame[34 : 14 + total]
    return message[0] == 8 and message[1] == 0 and _internet_checksum_ok(message)


def _ipv6_request(frame: bytes, ipv6: str) -> bool:
    """Is `frame` an intact ICMPv6 echo request to `ipv6` that the kernel would answer?"""
    header = frame[14:54]
    if len(header) < 40 or header[0] >> 4 != 6 or header[6] != ICMPV6:
        return False
    length = int.from_bytes(header[4:6], "big")
    source = ipaddress.IPv6Address(header[8:24])
    if header[24:40] != socket.inet_pton(socket.AF_INET6, ipv6):
        return False
    if not ipv6_source_ok(source, ipv6):
        return False
    if length < 8 or 54 + length > len(frame):
        return False
    message = frame[54 : 54 + length]
    pseudo = header[8:40] + length.to_bytes(4, "big") + bytes([0, 0, 0, ICMPV6])
    return message[0] == 128 and message[1] == 0 and _internet_checksum_ok(pseudo + message)


def expected_reply(
    frame: bytes, ipv4: str = SERVER_IPV4, ipv6: str = SERVER_IPV6, mac: str = SERVER_MAC
) -> bytes | None:
    """The reply a correct echo server sends for `frame`, or None if it must pass it on."""
    if len(frame) < 14 or not _to_me(frame, mac):
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800 and _ipv4_request(frame, ipv4):
        return raw(_reply_v4(Ether(frame)))
    if ethertype == 0x86DD and _ipv6_request(frame, ipv6):
        packet = Ether(frame)
        padding = raw(packet[Padding]) if Padding in packet else b""  # bytes past the IPv6 payload
        return raw(_reply_v6(packet)) + padding
    return None


def quick_reply(
    frame: bytes, ipv4: str = SERVER_IPV4, ipv6: str = SERVER_IPV6, mac: str = SERVER_MAC
) -> bytes | None:
    """`expected_reply` built from bytes, not scapy: 30 times faster, for the fuzzers.

    A package test checks that both always agree.
    """
    if len(frame) < 14 or not _to_me(frame, mac):
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    reply = bytearray(frame)
    reply[0:6], reply[6:12] = frame[6:12], frame[0:6]
    if ethertype == 0x0800 and _ipv4_request(frame, ipv4):
        reply[26:30], reply[30:34] = frame[30:34], frame[26:30]
        reply[22], reply[34] = REPLY_TTL, 0  # TTL; ICMP type echo reply
    elif ethertype == 0x86DD and _ipv6_request(frame, ipv6):
        reply[22:38], reply[38:54] = frame[38:54], frame[22:38]
        reply[21], reply[54] = REPLY_TTL, 129  # hop limit; ICMPv6 type echo reply
    else:
        return None
    fix_checksums(reply)
    return bytes(reply)


def _swap_macs(packet: Packet) -> None:
    packet.src, packet.dst = packet.dst, packet.src


def _reply_v4(packet: Packet) -> Packet:
    _swap_macs(packet)
    ip = packet[IP]
    ip.src, ip.dst, ip.ttl = ip.dst, ip.src, REPLY_TTL
    del ip.chksum
    packet[ICMP].type = 0
    del packet[ICMP].chksum
    return packet


def _reply_v6(packet: Packet) -> Packet:
    _swap_macs(packet)
    ip6 = packet[IPv6]
    ip6.src, ip6.dst, ip6.hlim = ip6.dst, ip6.src, REPLY_TTL
    request = packet[ICMPv6EchoRequest]
    reply = ICMPv6EchoReply(id=request.id, seq=request.seq, data=request.data)
    ip6.remove_payload()
    ip6.add_payload(reply)
    return packet


def same_reply(got: bytes, expected: bytes) -> bool:
    """Equal frames, where the ICMP checksum may be written 0x0000 or 0xffff.

    In one's complement both are zero, and an incremental update (RFC 1624, what a program does)
    and a full computation (what scapy does) can differ only that way. Both verify, except for a
    message whose other words sum to zero (an echo reply with id 0, sequence 0 and an all-zero
    payload), where only 0xffff does. The kernel's own echo writes 0x0000 there too, so the
    oracle accepts either, as it would accept the kernel's own reply. Nowhere else may a byte
    differ: not the IP header's checksum, not the payload.
    """
    if got == expected:
        return True
    if len(got) != len(expected) or len(expected) < ETH_HLEN + 1:
        return False
    differing = [i for i in range(len(got)) if got[i] != expected[i]]
    at = icmp_checksum_offset(expected)
    pairs = {(got[i], expected[i]) for i in differing}
    return differing == [at, at + 1] and pairs <= {(0, 0xFF), (0xFF, 0)}


def icmp_checksum_offset(frame: bytes) -> int:
    """Where an echo reply's ICMP or ICMPv6 checksum sits: after a plain IPv4 or IPv6 header."""
    if int.from_bytes(frame[12:14], "big") == 0x86DD:
        return ETH_HLEN + 40 + 2
    return ETH_HLEN + (frame[ETH_HLEN] & 0x0F) * 4 + 2


# A test that a frame goes unanswered sends, after it, a request sure to be answered: its reply
# ends the wait (bpflab.wire.Wire.unanswered), as replies keep their order on a veth.
FENCE_ID = 0xFE2C  # the ICMP id of that request


def is_echo_reply(frame: bytes) -> bool:
    """An ICMPv4 type 0 or ICMPv6 type 129 frame: the only kind of frame an echo server sends."""
    packet = Ether(frame)
    if ICMP in packet:
        return packet[ICMP].type == 0
    return ICMPv6EchoReply in packet


def is_fence_reply(frame: bytes) -> bool:
    """The reply to the fence request: an ICMPv4 echo reply with FENCE_ID."""
    packet = Ether(frame)
    return ICMP in packet and packet[ICMP].type == 0 and packet[ICMP].id == FENCE_ID
