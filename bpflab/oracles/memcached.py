"""memcached's UDP protocol as memcached speaks it: what a right answer is for lab xdp-cache.

Over UDP every datagram starts with an 8-byte frame header (request id, sequence number, number
of datagrams, 0), then the text protocol: `get <key>\\r\\n` asks; `VALUE <key> <flags> <bytes>
\\r\\n<data>\\r\\nEND\\r\\n` answers a hit, `END\\r\\n` a miss, under the request's id. These
functions build requests and the exact replies memcached sends, from the key and the value
alone (https://github.com/memcached/memcached/blob/master/doc/protocol.txt).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from bpflab.packets import (
    CLIENT_IPV4,
    ETH_HLEN,
    IPV4,
    SERVER_IPV4,
    SERVER_MAC,
    ether,
    internet_checksum,
    udp_checksum,
)

PORT = 11211
FRAME = struct.Struct("!HHHH")  # request id, sequence number, datagrams in the message, reserved
MAX_KEY = 250  # memcached's own limit on a key's length
END = b"END\r\n"


@dataclass(frozen=True)
class Datagram:
    """One memcached UDP datagram: its frame header and its text."""

    request_id: int
    sequence: int
    total: int
    body: bytes


def datagram(request_id: int, body: bytes, sequence: int = 0, total: int = 1) -> bytes:
    """A UDP payload: the frame header, then `body`."""
    return FRAME.pack(request_id, sequence, total, 0) + body


def parse(payload: bytes) -> Datagram:
    """A UDP payload's frame header and text; ValueError if it has no whole header."""
    if len(payload) < FRAME.size:
        raise ValueError(f"a memcached datagram needs {FRAME.size} bytes of header; it has {len(payload)}")
    request_id, sequence, total, _ = FRAME.unpack_from(payload)
    return Datagram(request_id, sequence, total, payload[FRAME.size:])


def get_request(key: bytes, request_id: int = 1) -> bytes:
    """`get <key>` as one UDP payload."""
    return datagram(request_id, b"get " + key + b"\r\n")


def hit_reply(key: bytes, value: bytes, flags: int = 0, request_id: int = 1) -> bytes:
    """The UDP payload memcached answers a one-key GET with when it holds the key."""
    return datagram(request_id, b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(value), value) + END)


def miss_reply(request_id: int = 1) -> bytes:
    """The UDP payload memcached answers a one-key GET with when it does not hold the key."""
    return datagram(request_id, END)


def value_of(body: bytes) -> bytes | None:
    """The value a one-key GET's reply text carries (None for `END`, a miss); ValueError if the
    text is neither a whole hit nor a miss."""
    if body == END:
        return None
    header, _, rest = body.partition(b"\r\n")
    fields = header.split(b" ")
    if len(fields) != 4 or fields[0] != b"VALUE" or not fields[3].isdigit():
        raise ValueError(f"not a GET's reply: {body[:80]!r}")
    size = int(fields[3])
    if rest[size:] != b"\r\n" + END:
        raise ValueError(f"a reply whose value is not {size} bytes followed by END: {body[:80]!r}")
    return rest[:size]


def get_frame(key: bytes, request_id: int = 1, sport: int = 40000) -> bytes:
    """A whole frame from the client carrying `get <key>`, for test-run (scapy fills the checksums)."""
    packet = ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4) / UDP(sport=sport, dport=PORT)
    return bytes(packet / Raw(get_request(key, request_id)))


UDP_HLEN = 8
IP_HLEN = 20


def cached_get(frame: bytes) -> tuple[int, bytes] | None:
    """(request id, key) if `frame` is a GET the lab's cache may answer: a whole, intact IPv4
    datagram the kernel would deliver to memcached's port on the server (checksums right,
    lengths exact, no options, no fragment), one frame header of one datagram, and exactly
    `get <key>\r\n` with one key of 1 to MAX_KEY printable bytes. Else None: it must pass."""
    if len(frame) < ETH_HLEN + IP_HLEN + UDP_HLEN + FRAME.size or frame[:6] != bytes.fromhex(
            SERVER_MAC.replace(":", "")) or int.from_bytes(frame[12:14], "big") != IPV4:
        return None
    ip = frame[ETH_HLEN:ETH_HLEN + IP_HLEN]
    udp_at = ETH_HLEN + IP_HLEN
    if (ip[0] != 0x45 or ip[9] != 17 or internet_checksum(ip) != 0 or int.from_bytes(ip[6:8], "big") & 0x3FFF
            or ip[16:20] != bytes(map(int, SERVER_IPV4.split("."))) or
            int.from_bytes(ip[2:4], "big") != len(frame) - ETH_HLEN):
        return None
    udp = frame[udp_at:]
    if (int.from_bytes(udp[2:4], "big") != PORT or int.from_bytes(udp[0:2], "big") == 0 or
            int.from_bytes(udp[4:6], "big") != len(udp) or
            (udp[6:8] != b"\0\0" and udp_checksum(ip[12:20], udp) != int.from_bytes(udp[6:8], "big"))):
        return None
    message = parse(udp[UDP_HLEN:])
    key = message.body[4:-2]
    if ((message.sequence, message.total) != (0, 1) or udp[UDP_HLEN + 6:UDP_HLEN + 8] != b"\0\0"
            or message.body != b"get " + key + b"\r\n" or not 0 < len(key) <= MAX_KEY
            or any(byte <= 0x20 or byte == 0x7F for byte in key)):
        return None
    return message.request_id, key


def reply_problem(request: bytes, reply: bytes, texts: dict[bytes, bytes]) -> str:
    """What is wrong with `reply`, sent back at XDP for frame `request`, when the cache holds
    `texts` (key -> memcached's reply text, VALUE to END); "" if it is right: the request is one
    the cache may answer (`cached_get`) for a key it holds, and the reply is the request's frame
    turned back (addresses and ports swapped) carrying that text under the request's id, with
    right lengths and checksums."""
    asked = cached_get(request)
    if asked is None:
        return "the request is not a whole, intact one-key GET: it should have passed to memcached"
    request_id, key = asked
    if key not in texts:
        return f"the cache does not hold {key!r}: the GET should have passed to memcached"
    if len(reply) < ETH_HLEN + IP_HLEN + UDP_HLEN:
        return f"the reply is {len(reply)} bytes long, too short for its headers"
    problems = []
    ip, udp_at = reply[ETH_HLEN:ETH_HLEN + IP_HLEN], ETH_HLEN + IP_HLEN
    udp = reply[udp_at:]
    if reply[:6] != request[6:12] or reply[6:12] != request[:6]:
        problems.append("its MAC addresses are not the request's, swapped")
    if ip[12:16] != request[30:34] or ip[16:20] != request[26:30] or ip[0] != 0x45 or ip[9] != 17:
        problems.append("its IP addresses are not the request's, swapped (or it is not IPv4 UDP)")
    if internet_checksum(ip) != 0:
        problems.append("its IP header checksum is wrong")
    if int.from_bytes(ip[2:4], "big") != len(reply) - ETH_HLEN:
        problems.append(f"its IP total length says {int.from_bytes(ip[2:4], 'big')}, the frame carries "
                        f"{len(reply) - ETH_HLEN}")
    if udp[0:2] != request[udp_at + 2:udp_at + 4] or udp[2:4] != request[udp_at:udp_at + 2]:
        problems.append("its UDP ports are not the request's, swapped")
    if int.from_bytes(udp[4:6], "big") != len(udp):
        problems.append(f"its UDP length says {int.from_bytes(udp[4:6], 'big')}, the datagram is {len(udp)}")
    elif udp[6:8] != b"\0\0" and udp_checksum(ip[12:20], udp) != int.from_bytes(udp[6:8], "big"):
        problems.append("its UDP checksum is wrong")
    wanted = datagram(request_id, texts[key])
    if udp[UDP_HLEN:] != wanted:
        problems.append(f"its payload is {udp[UDP_HLEN:]!r}; memcached would send {wanted!r}")
    return "; ".join(problems)


@dataclass(frozen=True)
class Operation:
    """One client operation on a key, as a client saw it: when it was sent and when its answer
    came (any clock, the same for all), and the value it set or got (None: a GET that missed)."""

    kind: str  # "set" or "get"
    key: bytes
    value: bytes | None
    sent: float
    answered: float


def stale_reads(history: list[Operation]) -> list[str]:
    """The GETs of `history` that no order of its operations explains: each GET must return the
    value of the last SET of its key acknowledged before the GET was sent, or of a SET not over
    by then (it may have taken effect in between). Every SET must write a value of its own, so
    a value names the SET that wrote it. Returns one sentence per bad GET (none: consistent)."""
    sets = [op for op in history if op.kind == "set"]
    writer = {(op.key, op.value): op for op in sets}
    assert len(writer) == len(sets), "every SET must write a value of its own"
    wrong = []
    for get in (op for op in history if op.kind == "get"):
        done = [op for op in sets if op.key == get.key and op.answered < get.sent]
        last = max(done, key=lambda op: op.answered, default=None)
        if last is None:
            continue  # nothing was acknowledged before it: any value of the key, or none, will do
        wrote = writer.get((get.key, get.value))
        if wrote is None:
            said = "nothing" if get.value is None else f"{get.value!r}, which no SET wrote"
            wrong.append(f"GET {get.key!r} returned {said}, after SET {last.value!r} was acknowledged")
        elif wrote is not last and wrote.answered < last.sent:
            wrong.append(f"GET {get.key!r} returned {get.value!r}, older than {last.value!r}, whose SET was "
                         "acknowledged before the GET was sent: a stale read")
    return wrong


def zipf_keys(keys: int, count: int, exponent: float = 0.99, seed: int = 0) -> list[int]:
    """`count` key numbers in [0, keys), drawn with Zipf's law: key i has weight 1 / (i + 1)^exponent,
    the skew of real caches' traffic (0.99 is the usual benchmark setting, BMC's among them)."""
    weights = [1 / (rank + 1) ** exponent for rank in range(keys)]
    return random.Random(seed).choices(range(keys), weights=weights, k=count)
