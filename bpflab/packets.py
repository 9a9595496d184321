"""Scapy builders and checks shared by the grader's suites and the notebooks.

Unit tests (test-run) have no real interfaces, so frames carry fixed, locally administered
MACs and the topology's addresses; over the veth, the topology's real MACs are used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw, raw

CLIENT_MAC = "02:00:00:00:00:01"
SERVER_MAC = "02:00:00:00:00:02"
ETH_HLEN = 14
IPV4, IPV6 = 0x0800, 0x86DD  # Ethernet types
CLIENT_IPV4, SERVER_IPV4 = "192.0.2.1", "192.0.2.2"
CLIENT_IPV6, SERVER_IPV6 = "2001:db8::1", "2001:db8::2"


def ether(src: str = CLIENT_MAC, dst: str = SERVER_MAC) -> Ether:
    return Ether(src=src, dst=dst)


def payload(size: int) -> Raw:
    """A recognisable payload of `size` bytes (a counting pattern, like ping's)."""
    return Raw(bytes(i % 256 for i in range(size)))


def icmp_echo_v4(size: int = 56, ident: int = 0x1234, seq: int = 1) -> Packet:
    return ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4) / ICMP(id=ident, seq=seq) / payload(size)


def icmp_echo_v6(size: int = 56, ident: int = 0x1234, seq: int = 1) -> Packet:
    ip6 = IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6)
    return ether() / ip6 / ICMPv6EchoRequest(id=ident, seq=seq) / payload(size)


def udp_v4(dport: int = 53, size: int = 16) -> Packet:
    return ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4) / UDP(sport=40000, dport=dport) / payload(size)


def tcp_v4(dport: int = 80) -> Packet:
    return ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4) / TCP(sport=40000, dport=dport, flags="S")


def udp_v6(dport: int = 53, size: int = 16) -> Packet:
    return ether() / IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6) / UDP(sport=40000, dport=dport) / payload(size)


def arp_request() -> Packet:
    return ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=CLIENT_IPV4, pdst=SERVER_IPV4, hwsrc=CLIENT_MAC)


def truncations(frame: bytes, shortest: int = ETH_HLEN) -> Iterator[bytes]:
    """Every prefix of `frame` shorter than the whole, from `shortest` bytes up.

    Test-run refuses frames shorter than an Ethernet header (EINVAL), and so do real devices.
    """
    for length in range(shortest, len(frame)):
        yield frame[:length]


def describe(frame: bytes) -> str:
    """A one-line scapy summary of raw frame bytes, for feedback to students."""
    if not frame:
        return "(empty frame)"
    return f"{Ether(frame).summary()} ({len(frame)} bytes)"


def ipv4_source_ok(source: ipaddress.IPv4Address, server: str) -> bool:
    """Should a server at `server` answer `source` itself? Not loopback, multicast, the limited
    broadcast or its own address: "martian sources", which the kernel drops (and logs) before
    any socket sees them. Nor 0.0.0.0/8, which some kernels drop and others (6.18, given a
    route) answer: passed, it is the running kernel's to decide (tests/test_echo.py checks
    these rules against the kernel)."""
    return not (source.packed[0] == 0 or source.is_loopback or source.is_multicast
                or source == ipaddress.IPv4Address("255.255.255.255")
                or source == ipaddress.IPv4Address(server))


def ipv6_source_ok(source: ipaddress.IPv6Address, server: str) -> bool:
    """The same for IPv6: not ::1, multicast or the server's own address (martians); not :: or
    IPv4-mapped (::ffff:0:0/96), which some kernels drop and others answer: passed."""
    return not (source.is_unspecified or source.is_loopback or source.is_multicast
                or source.ipv4_mapped is not None or source == ipaddress.IPv6Address(server))


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum of `data` (odd length padded with a zero byte)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(memoryview(data).cast("H"))  # native order; the folded sum is order-free
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int.from_bytes((~total & 0xFFFF).to_bytes(2, "little"), "big")


def fix_checksums(frame: bytearray) -> None:
    """Recompute the IPv4 header and ICMP/ICMPv6/UDP checksums, where the frame has them."""
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == IPV4 and len(frame) >= 34 and frame[14] == 0x45:
        frame[24:26] = b"\0\0"
        frame[24:26] = internet_checksum(bytes(frame[14:34])).to_bytes(2, "big")
        end = 14 + int.from_bytes(frame[16:18], "big")
        if frame[23] == 1 and 36 <= end <= len(frame):
            frame[36:38] = b"\0\0"
            frame[36:38] = internet_checksum(bytes(frame[34:end])).to_bytes(2, "big")
        elif frame[23] == 17 and 42 <= end <= len(frame):
            _fix_udp(frame, 34, end, bytes(frame[26:34]))
    elif ethertype == IPV6 and len(frame) >= 58 and frame[20] in (17, 58):
        end = 54 + int.from_bytes(frame[18:20], "big")
        if frame[20] == 17 and 62 <= end <= len(frame):
            _fix_udp(frame, 54, end, bytes(frame[22:54]))
        elif frame[20] == 58 and end <= len(frame):
            frame[56:58] = b"\0\0"
            pseudo = bytes(frame[22:54]) + (end - 54).to_bytes(4, "big") + bytes([0, 0, 0, 58])
            frame[56:58] = internet_checksum(pseudo + bytes(frame[54:end])).to_bytes(2, "big")


def with_field(frame: Packet | bytes, layer: type[Packet], field: str, value: object) -> bytes:
    """`frame`'s bytes with one header field of `layer` (scapy's name: `IP`, "chksum") set to
    `value`, and nothing else recomputed: a checksum or a length the kernel would find wrong."""
    data = raw(frame)
    target = Ether(data)[layer]
    start = len(data) - len(target.original)  # dissected, each layer keeps its bytes from here on
    header = target.copy()
    header.remove_payload()
    shipped = raw(header)  # every field of the dissected header is explicit: it builds as it came
    assert data[start:start + len(shipped)] == shipped, f"{layer.__name__} does not rebuild as it came"
    header.setfieldval(field, value)
    return data[:start] + raw(header) + data[start + len(shipped):]


def damaged(frame: Packet | bytes, layer: type[Packet], field: str) -> bytes:
    """`frame` with one field's low bits flipped (for a payload, its first byte): a wrong checksum,
    a damaged payload."""
    old = Ether(raw(frame))[layer].getfieldval(field)
    flipped = bytes([old[0] ^ 0xFF]) + old[1:] if isinstance(old, bytes) else old ^ 0xFF
    return with_field(frame, layer, field, flipped)


def length_changed(frame: Packet | bytes, layer: type[Packet], field: str, by: int) -> bytes:
    """`frame` with the length `field` of `layer` (IP "len", IPv6 "plen", UDP "len") off by `by`,
    and its checksums made right again: a header that lies about a length, for tests that a
    program does not believe it."""
    told = Ether(raw(frame))[layer].getfieldval(field) + by
    data = bytearray(with_field(frame, layer, field, told))
    fix_checksums(data)
    return bytes(data)


def udp_checksum(addresses: bytes, datagram: bytes) -> int:
    """The UDP checksum of `datagram` (its checksum field zeroed) between `addresses`
    (source and destination, concatenated); 0 is sent as 0xffff."""
    pseudo = addresses + bytes([0, 17]) + len(datagram).to_bytes(2, "big")
    return internet_checksum(pseudo + datagram[:6] + b"\0\0" + datagram[8:]) or 0xFFFF


def _fix_udp(frame: bytearray, start: int, end: int, addresses: bytes) -> None:
    frame[start + 6 : start + 8] = udp_checksum(addresses, bytes(frame[start:end])).to_bytes(2, "big")
