"""The DNS lab's frames and their right answers: what the grader and the notebook compare with.

`query_frame` builds a query as a client would send it (dnspython for the DNS message, scapy
below it). `expected_answer` is the fast path's specification in Python: the exact frame a
correct program sends back for a frame, or None when it must pass the frame to the kernel. The
answer's DNS part is rendered by dnspython from the records, so a program is compared with an
independent implementation of the wire format, not with itself.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import dns.flags
import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import raw

from bpflab.oracles import dns_records
from bpflab.packets import (
    CLIENT_IPV4,
    CLIENT_IPV6,
    SERVER_IPV4,
    SERVER_IPV6,
    SERVER_MAC,
    ether,
    internet_checksum,
    ipv4_source_ok,
    ipv6_source_ok,
    udp_checksum,
)

DNS_PORT = 53
MAX_QUERY_LEN = 512  # UDP bytes, as in dns.h
MAX_EDNS_OPTIONS = 8  # options walked in an OPT record, as in dns.h
MAX_LABEL_LEN = 63
EDNS_PAYLOAD = 1232
REPLY_TTL = 64
QR, OPCODE, AA, TC, RD = 0x8000, 0x7800, 0x0400, 0x0200, 0x0100
EDNS_DO = 0x8000
ANSWERS_A, ANSWERS_AAAA = 0, 1  # keys of the `answers` map (2 and 3 count head moves and no room)


def query_frame(name: str, qtype: str = "A", *, ipv6: bool = False, edns: int | None = None,
                do: bool = False, options: tuple = (), flags: int = dns.flags.RD,
                qid: int = 0x1234, sport: int = 33333, dport: int = DNS_PORT) -> bytes:
    """A query frame from the client to the server; `edns` is the advertised UDP size."""
    message = dns.message.make_query(name, qtype, use_edns=edns is not None, payload=edns or 0,
                                     want_dnssec=do, options=list(options))
    message.id, message.flags = qid, flags
    return wrap(message.to_wire(), ipv6=ipv6, sport=sport, dport=dport)


def wrap(dns_wire: bytes, *, ipv6: bool = False, sport: int = 33333, dport: int = DNS_PORT) -> bytes:
    """A DNS message in a UDP datagram from the client to the server, checksums right."""
    l3 = IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6) if ipv6 else IP(src=CLIENT_IPV4, dst=SERVER_IPV4)
    return raw(ether() / l3 / UDP(sport=sport, dport=dport) / dns_wire)


def load_map(program, records: dns_records.Records) -> None:
    """Fill the program's `records` map from the records (what the runtime does on start)."""
    dns_records.sync_map(program.table("records").map_fd, records)


def answers(program) -> dict[int, int]:
    """The program's `answers` counters, summed over CPUs (ANSWERS_A, ANSWERS_AAAA, ...)."""
    return program.percpu_sums("answers")


def answers_sent(program) -> int:
    """How many queries the program has answered (A plus AAAA; the other keys count ways)."""
    counts = answers(program)
    return counts.get(ANSWERS_A, 0) + counts.get(ANSWERS_AAAA, 0)


class _Query:
    """The parts of a query frame that decide its answer, parsed like the program does."""

    def __init__(self, l4: int, addresses: bytes, message: bytes, name_len: int, qtype: int,
                 edns_flags: int | None) -> None:
        self.l4, self.addresses, self.message = l4, addresses, message
        self.name_len, self.qtype, self.edns_flags = name_len, qtype, edns_flags


def _ip_part(frame: bytes, ipv4: str, ipv6: str) -> tuple[int, bytes, int] | None:
    """(UDP offset, the two addresses, UDP length) of an intact IP header for us, or None."""
    ethertype = frame[12:14]
    if ethertype == b"\x08\x00":
        header = frame[14:34]
        if len(header) < 20 or header[0] != 0x45 or header[9] != 17:
            return None
        source = ipaddress.IPv4Address(header[12:16])
        if header[16:20] != socket.inet_aton(ipv4) or not ipv4_source_ok(source, ipv4):
            return None
        if struct.unpack("!H", header[6:8])[0] & 0x3FFF or internet_checksum(header) != 0:
            return None
        total = struct.unpack("!H", header[2:4])[0]
        return (34, header[12:20], total - 20) if total >= 20 else None
    if ethertype == b"\x86\xdd":
        header = frame[14:54]
        if len(header) < 40 or header[0] >> 4 != 6 or header[6] != 17:
            return None
        source = ipaddress.IPv6Address(header[8:24])
        if header[24:40] != socket.inet_pton(socket.AF_INET6, ipv6):
            return None
        if not ipv6_source_ok(source, ipv6):
            return None
        return 54, header[8:40], struct.unpack("!H", header[4:6])[0]
    return None


def _name_len(frame: bytes, start: int) -> int | None:
    """Wire length of the name at `start`, by the program's rules (read_name), or None."""
    label_left = 0
    for i in range(dns_records.MAX_NAME_LEN):
        if start + i >= len(frame):
            return None
        c = frame[start + i]
        if label_left == 0:
            if c == 0:
                return i + 1
            if c > MAX_LABEL_LEN:
                return None
            label_left = c
        else:
            label_left -= 1
    return None


def _parse(frame: bytes, ipv4: str, ipv6: str, mac: str) -> _Query | None:
    if len(frame) < 14 or frame[0:6] != bytes.fromhex(mac.replace(":", "")):
        return None
    ip = _ip_part(frame, ipv4, ipv6)
    if ip is None:
        return None
    l4, addresses, udp_len = ip
    udp = frame[l4 : l4 + 8]
    if len(udp) < 8 or udp[2:4] != DNS_PORT.to_bytes(2, "big") or udp[0:2] == b"\0\0":
        return None
    if struct.unpack("!H", udp[4:6])[0] != udp_len or not 20 <= udp_len <= MAX_QUERY_LEN:
        return None
    datagram = frame[l4 : l4 + udp_len]
    if len(datagram) < udp_len:
        return None
    if udp[6:8] == b"\0\0":
        if l4 == 54:
            return None  # UDP over IPv6 must carry a checksum
    elif udp_checksum(addresses, datagram) != struct.unpack("!H", udp[6:8])[0]:
        return None
    message = datagram[8:]
    flags, qd, an, ns, ar = struct.unpack("!HHHHH", message[2:12])
    if flags & (QR | OPCODE | TC) or qd != 1 or an or ns or ar > 1:
        return None
    name_len = _name_len(frame, l4 + 8 + 12)
    if name_len is None:
        return None
    tail = 12 + name_len
    if l4 + 8 + tail + 4 > len(frame):
        return None
    qtype, qclass = struct.unpack("!HH", frame[l4 + 8 + tail : l4 + 8 + tail + 4])
    if qtype not in (1, 28) or qclass != 1:
        return None
    tail += 4
    if ar == 0:
        return _Query(l4, addresses, message, name_len, qtype, None) if tail == len(message) else None
    opt = frame[l4 + 8 + tail : l4 + 8 + tail + 11]
    if len(opt) < 11 or opt[0] != 0 or opt[1:3] != b"\x00\x29" or opt[5] != 0 or opt[6] != 0:
        return None
    if tail + 11 + struct.unpack("!H", opt[9:11])[0] != len(message) or not _options_ok(message[tail + 11:]):
        return None
    return _Query(l4, addresses, message, name_len, qtype, struct.unpack("!H", opt[7:9])[0])


def _options_ok(options: bytes) -> bool:
    """An OPT record's options (code, length, data) fill it exactly, and are at most
    MAX_EDNS_OPTIONS: anything else gets FORMERR from a full server, or is left to it."""
    at = 0
    for _ in range(MAX_EDNS_OPTIONS):
        if at == len(options):
            return True
        if at + 4 > len(options):
            return False
        at += 4 + struct.unpack("!H", options[at + 2 : at + 4])[0]
    return at == len(options)


_RRSETS: dict[int, tuple[dns_records.Records, dict]] = {}


def _answer_rrsets(records: dns_records.Records) -> dict:
    """(name, type) -> the answer's RRset, made once per records (the fuzzer asks 100,000 times)."""
    if id(records) not in _RRSETS:  # the records are kept in the entry, so the id stays theirs
        _RRSETS[id(records)] = (records, {key: dns.rrset.from_text_list(key[0], records.ttl, "IN", key[1],
                                                                        list(addresses))
                                          for key, addresses in records.rrsets.items()})
    return _RRSETS[id(records)][1]


def _answer_message(query: _Query, records: dns_records.Records) -> bytes | None:
    """dnspython's rendering of the answer, or None if the records do not hold the name."""
    question_wire = query.message[12 : 12 + query.name_len]
    name = dns.name.from_wire(question_wire, 0)[0]
    rtype = dns.rdatatype.to_text(query.qtype)
    rrset = _answer_rrsets(records).get((name, rtype))
    if rrset is None:
        return None
    flags = struct.unpack("!H", query.message[2:4])[0]
    answer = dns.message.Message(id=struct.unpack("!H", query.message[0:2])[0])
    answer.flags = QR | AA | (flags & RD)
    answer.question = [dns.rrset.RRset(name, dns.rdataclass.IN, query.qtype)]
    answer.answer = [rrset]
    if query.edns_flags is not None:
        answer.use_edns(0, query.edns_flags & EDNS_DO, EDNS_PAYLOAD)
    return answer.to_wire(want_shuffle=False)  # the records' order, as the map holds them


def expected_answer(frame: bytes, records: dns_records.Records, ipv4: str = SERVER_IPV4,
                    ipv6: str = SERVER_IPV6, mac: str = SERVER_MAC) -> bytes | None:
    """The frame a correct fast path sends back for `frame`, or None if it must pass it."""
    query = _parse(frame, ipv4, ipv6, mac)
    message = _answer_message(query, records) if query else None
    if message is None:
        return None
    l4 = query.l4
    udp_len = 8 + len(message)
    header = bytearray(frame[14:l4])
    if l4 == 34:
        header[12:16], header[16:20] = frame[30:34], frame[26:30]
        header[8] = REPLY_TTL
        header[2:4] = (20 + udp_len).to_bytes(2, "big")
        header[10:12] = b"\0\0"
        header[10:12] = internet_checksum(bytes(header)).to_bytes(2, "big")
    else:
        header[8:24], header[24:40] = frame[38:54], frame[22:38]
        header[7] = REPLY_TTL
        header[4:6] = udp_len.to_bytes(2, "big")
    datagram = frame[l4 + 2 : l4 + 4] + frame[l4 : l4 + 2] + udp_len.to_bytes(2, "big") + b"\0\0" + message
    check = udp_checksum(query.addresses, datagram)
    datagram = datagram[:6] + check.to_bytes(2, "big") + datagram[8:]
    return frame[6:12] + frame[0:6] + frame[12:14] + bytes(header) + datagram


def udp_offset(frame: bytes) -> int:
    return 34 if frame[12:14] == b"\x08\x00" else 54


def udp_checksum_ok(frame: bytes) -> bool:
    """Is the UDP checksum of an answer frame right (and present)?"""
    l4 = udp_offset(frame)
    addresses = frame[26:34] if l4 == 34 else frame[22:54]
    datagram = frame[l4:]
    sent = struct.unpack("!H", datagram[6:8])[0]
    return sent != 0 and udp_checksum(addresses, datagram) == sent


def same_answer(got: bytes, want: bytes) -> bool:
    """Equal bytes, the UDP checksum aside (checked by its own test, so that one mistake costs
    the points of one behaviour)."""
    l4 = udp_offset(want)
    return len(got) == len(want) and got[: l4 + 6] == want[: l4 + 6] and got[l4 + 8 :] == want[l4 + 8 :]


def first_difference(got: bytes, want: bytes) -> str:
    """Where two answers first differ, in words a student can act on."""
    for offset, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"first wrong byte at offset {offset}: sent 0x{a:02x}, expected 0x{b:02x}"
    return f"the answer is {len(got)} bytes long, expected {len(want)}"


def message_of(frame: bytes) -> dns.message.Message:
    """The DNS message inside an answer frame, parsed by dnspython (for feedback)."""
    return dns.message.from_wire(frame[udp_offset(frame) + 8 :])

