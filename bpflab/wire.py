"""A raw packet socket on an interface inside a netns: send exact frames, collect what arrives.

scapy builds the frames; this sends them as they are (no ARP, no routing, no checksum fixing),
which is what tests of a packet-processing program need, and collects every frame that
arrives, so a test sees exactly what the server sent back.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Callable

from bpflab.topology import socket_in

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # sll_pkttype of frames this host sends: not "received"
SO_RCVBUFFORCE = 33  # SO_RCVBUF beyond rmem_max, for root; Python's socket module lacks the name
RECEIVE_BUFFER = 64 << 20  # room for thousands of replies while a fuzzer is still sending


class Wire:
    def __init__(self, netns: str, ifname: str) -> None:
        self.sock = socket_in(netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        self.sock.bind((ifname, 0))

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, frame: bytes) -> bool:
        """Send `frame`; False if the kernel dropped it for a full queue. A veth has no qdisc, so
        when the peer's receive ring is full (its softirq had no CPU for a moment) the frame is
        dropped and the socket says ENOBUFS, as a wire would lose it."""
        try:
            self.sock.send(frame)
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            return False
        return True

    def receive(self, quiet: float = 0.2, limit: float = 10.0) -> list[bytes]:
        """Every frame that arrives until none has for `quiet` seconds (at most `limit`)."""
        frames: list[bytes] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.sock], [], [], quiet)
            if not ready:
                break
            data, address = self.sock.recvfrom(65536)
            if address[2] != PACKET_OUTGOING:
                frames.append(data)
        return frames

    def receive_until(self, arrived: Callable[[bytes], bool], limit: float = 5.0,
                      settle: float = 0.1) -> list[bytes]:
        """Every frame that arrives until one satisfies `arrived` (then `settle` s more, to catch a
        duplicate), at most `limit` s. Waiting for the frame itself, not for a silence, is what
        keeps a loaded host (softirqs late by a second) from costing a correct program points."""
        frames: list[bytes] = []
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            data, address = self.sock.recvfrom(65536)
            if address[2] == PACKET_OUTGOING:
                continue
            frames.append(data)
            if arrived(data):
                return frames + self.receive(quiet=settle)
        return frames

    def exchange(self, frame: bytes, arrived: Callable[[bytes], bool], limit: float = 5.0) -> list[bytes]:
        """Send one frame; return what came back until the frame `arrived` picks (at most `limit` s)."""
        self.receive(quiet=0.0)  # forget anything that arrived before
        self.send(frame)
        return self.receive_until(arrived, limit)

    def unanswered(self, frame: bytes, fence: bytes, fence_reply: Callable[[bytes], bool]) -> list[bytes]:
        """Send `frame`, then `fence` (a request sure to be answered); return what came back before
        the fence's reply, apart from it. Replies on a veth keep their order, so anything `frame`
        provoked has arrived by then: a test of silence with no silence window to guess."""
        self.receive(quiet=0.0)
        self.send(frame)
        self.send(fence)
        return [data for data in self.receive_until(fence_reply, settle=0.0) if not fence_reply(data)]
