"""The cache lab's ground truth: a real memcached in a namespace answers as the oracle says."""

from __future__ import annotations

import pytest

from bpflab.oracles import memcached as oracle
from bpflab.services.memcached import Memcached, get_udp, tcp_client
from bpflab.topology import Topology


def test_a_datagram_parses_back() -> None:
    payload = oracle.hit_reply(b"k", b"v", flags=3, request_id=0xBEEF)
    assert oracle.parse(payload) == oracle.Datagram(0xBEEF, 0, 1, b"VALUE k 3 1\r\nv\r\nEND\r\n")
    with pytest.raises(ValueError, match="8 bytes of header"):
        oracle.parse(b"\0" * 7)


def test_memcached_in_a_namespace_answers_udp_gets_as_the_oracle_says(tmp_path) -> None:
    """A SET over TCP from the client namespace, then UDP GETs: byte for byte the oracle's replies,
    and memcached's own counters see them (the lab checks that XDP hits leave them alone)."""
    with Topology() as topo, Memcached(topo.server.netns, tmp_path / "memcached.log") as server:
        client = tcp_client(topo.client.netns, topo.server.ipv4)
        assert client.set(b"greeting", b"hello, cache", flags=7, noreply=False)
        hit = get_udp(topo.client.netns, topo.server.ipv4, b"greeting", request_id=0x1234)
        assert hit == oracle.hit_reply(b"greeting", b"hello, cache", flags=7, request_id=0x1234)
        miss = get_udp(topo.client.netns, topo.server.ipv4, b"absent", request_id=9)
        assert miss == oracle.miss_reply(request_id=9)
        stats = client.stats()
        assert (stats[b"get_hits"], stats[b"get_misses"]) == (1, 1)
        client.close()
        assert server.process.poll() is None
    assert server.process.poll() is not None  # stopped by its pid on the way out
