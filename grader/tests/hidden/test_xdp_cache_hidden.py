"""Instructor-only tests of xdp-cache: graded in batches, absent from the student release.

The parts are the ones the public suite loaded (the `parts` fixture); the network is built again
for this module (the `net` fixture, imported from the public suite).
"""

from __future__ import annotations

import socket

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw
from test_xdp_cache import expect_untouched, net, part, working_cache, working_hit  # noqa: F401

from bpflab.cache import CacheLab
from bpflab.oracles import memcached as oracle
from bpflab.packets import CLIENT_IPV4, CLIENT_IPV6, SERVER_IPV4, SERVER_IPV6, ether
from bpflab.parts import Parts
from bpflab.topology import socket_in
from grader.checks import expect, points

LAB = "xdp-cache"


@points(1)
def test_cache_leaves_other_traffic_alone(parts: Parts, net: CacheLab) -> None:  # noqa: F811
    """Step 1: a GET for a cached key over IPv6, over TCP, or from source port 0 passes untouched."""
    program = part(parts, "xdp_cache")
    working_hit(net, program)
    get = oracle.get_request(b"working")
    frames = {
        "a GET over IPv6":
            ether() / IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6) / UDP(sport=40000, dport=oracle.PORT),
        "a GET from UDP source port 0 (no answer can reach it)":
            ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4) / UDP(sport=0, dport=oracle.PORT),
        "a GET's text over TCP": ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4) /
            TCP(sport=40000, dport=oracle.PORT, flags="PA"),
    }
    for what, headers in frames.items():
        payload = get if "TCP" not in what else get[oracle.FRAME.size:]
        expect_untouched(net, program, bytes(headers / Raw(payload)), what)


@points(1)
def test_pipelined_writes_invalidate_every_key(parts: Parts, net: CacheLab) -> None:  # noqa: F811
    """Step 3: two SETs in one TCP segment (pipelined, as clients batch them): both keys' next GETs
    return the new values."""
    programs = [part(parts, entry) for entry in ("xdp_cache", "tc_cache_fill", "tc_cache_invalidate")]
    with net.attached(*programs):
        working_cache(net, programs[0])
        for key in (b"first", b"second"):
            net.client.set(key, b"old", noreply=False)
            net.get(key, 1), net.get(key, 2)  # the second from the cache
        with socket_in(net.topology.client.netns, socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.settimeout(2)
            tcp.connect((net.server_ip, oracle.PORT))
            tcp.sendall(b"set first 0 0 3\r\nnew\r\nset second 0 0 3\r\nnew\r\n")
            answers = b""
            while answers.count(b"STORED\r\n") < 2:
                answers += tcp.recv(100)
        for key in (b"first", b"second"):
            got = net.get(key, 3)
            expect(got == oracle.hit_reply(key, b"new", request_id=3),
                   f"After two pipelined SETs, GET {key!r} got {got!r}; the value is b'new'.")
