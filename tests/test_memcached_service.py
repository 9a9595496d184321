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


def op(kind: str, value: bytes | None, sent: float, answered: float, key: bytes = b"k") -> oracle.Operation:
    return oracle.Operation(kind, key, value, sent, answered)


def test_a_read_older_than_an_acknowledged_set_is_stale() -> None:
    history = [op("set", b"1", 0, 1), op("set", b"2", 2, 3), op("get", b"1", 4, 5)]
    assert oracle.stale_reads(history) == [
        "GET b'k' returned b'1', older than b'2', whose SET was acknowledged before the GET was sent: "
        "a stale read"]


@pytest.mark.parametrize("history", [
    [op("set", b"1", 0, 1), op("get", b"1", 2, 3)],  # the last acknowledged value
    [op("set", b"1", 0, 1), op("set", b"2", 2, 6), op("get", b"1", 3, 4)],  # the second SET not done yet
    [op("set", b"1", 0, 1), op("set", b"2", 2, 6), op("get", b"2", 3, 4)],  # ... or already in effect
    [op("get", None, 0, 1), op("set", b"1", 2, 3)],  # a miss before any SET
    [op("set", b"1", 0, 1), op("get", None, 2, 3, key=b"other")],  # another key
])
def test_consistent_histories_have_no_stale_read(history) -> None:
    assert oracle.stale_reads(history) == []


def test_a_miss_or_an_unknown_value_after_a_set_is_wrong() -> None:
    assert oracle.stale_reads([op("set", b"1", 0, 1), op("get", None, 2, 3)]) == [
        "GET b'k' returned nothing, after SET b'1' was acknowledged"]
    assert "which no SET wrote" in oracle.stale_reads([op("set", b"1", 0, 1), op("get", b"9", 2, 3)])[0]


def test_zipf_keys_are_skewed_and_reproducible() -> None:
    drawn = oracle.zipf_keys(10_000, 50_000, seed=1)
    assert drawn == oracle.zipf_keys(10_000, 50_000, seed=1)
    top = sum(1 for key in drawn if key < 1000) / len(drawn)
    assert 0.6 < top < 0.9, top  # the 10% most popular keys take most of the traffic
