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

from bpflab.packets import CLIENT_IPV4, SERVER_IPV4, ether

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


def get_frame(key: bytes, request_id: int = 1, sport: int = 40000) -> bytes:
    """A whole frame from the client carrying `get <key>`, for test-run (scapy fills the checksums)."""
    packet = ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4) / UDP(sport=sport, dport=PORT)
    return bytes(packet / Raw(get_request(key, request_id)))


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
