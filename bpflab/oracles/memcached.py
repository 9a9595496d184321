"""memcached's UDP protocol as memcached speaks it: what a right answer is for lab xdp-cache.

Over UDP every datagram starts with an 8-byte frame header (request id, sequence number, number
of datagrams, 0), then the text protocol: `get <key>\\r\\n` asks; `VALUE <key> <flags> <bytes>
\\r\\n<data>\\r\\nEND\\r\\n` answers a hit, `END\\r\\n` a miss, under the request's id. These
functions build requests and the exact replies memcached sends, from the key and the value
alone (https://github.com/memcached/memcached/blob/master/doc/protocol.txt).
"""

from __future__ import annotations

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
