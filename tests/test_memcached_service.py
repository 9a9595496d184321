"""The cache lab's ground truth: a real memcached in a namespace answers as the oracle says."""

from __future__ import annotations

import pytest

from bpflab.oracles import memcached as oracle
from bpflab.services.memcached import Memcached, get_udp, tcp_client
from bpflab.topology import Topology

CACHE_HITS = 0  # slot of xdp_cache.c's `events` map


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


def test_the_cache_in_progress_answers_hits_and_never_a_stale_value(tmp_path) -> None:
    """bpf/xdp_cache.c against the real memcached: the first GET fills the cache from memcached's
    reply, the next ones are answered at XDP byte for byte as memcached would, and a SET makes
    the next GET go to memcached for the new value (lab xdp-cache, issue 18, in progress)."""
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import Ether

    from bpflab import testrun
    from bpflab.attach import attach_tc, attach_xdp
    from bpflab.course.labs import BPF_DIR
    from bpflab.oracles import echo
    from bpflab.packets import damaged
    from bpflab.programs import compile_source
    from bpflab.verdicts import XDP_PASS, XDP_TX

    compiled = compile_source(BPF_DIR / "xdp_cache.c", "xdp")
    parts = {entry: compiled.load(entry, owns_module=False, hook=hook) for entry, hook in
             (("xdp_cache", "xdp"), ("tc_cache_fill", "tc"), ("tc_cache_invalidate", "tc"))}
    echo.configure(parts["xdp_cache"])
    hits = 0
    try:
        with Topology() as topo, Memcached(topo.server.netns, tmp_path / "memcached.log"):
            server = topo.server
            attach_xdp(server.netns, server.ifname, parts["xdp_cache"].fd)
            attach_tc(server.netns, server.ifname, parts["tc_cache_invalidate"].fd, "invalidate", "ingress")
            attach_tc(server.netns, server.ifname, parts["tc_cache_fill"].fd, "fill", "egress")
            client = tcp_client(topo.client.netns, server.ipv4)
            for value in (b"first value", b"second value"):
                assert client.set(b"key", value, flags=3, noreply=False)
                for request_id in range(1, 4):
                    got = get_udp(topo.client.netns, server.ipv4, b"key", request_id=request_id)
                    assert got == oracle.hit_reply(b"key", value, flags=3, request_id=request_id)
                hits += 2  # the first GET after the SET went to memcached
                assert parts["xdp_cache"].percpu_sums("events").get(CACHE_HITS, 0) == hits
            assert client.stats()[b"get_hits"] == 2  # memcached saw one GET per value
            request = oracle.get_frame(b"key", request_id=77)
            hit = testrun.run(parts["xdp_cache"].fd, request)
            assert hit.verdict == XDP_TX and Ether(hit.packet)[UDP].load == oracle.hit_reply(
                b"key", b"second value", flags=3, request_id=77)
            damaged_request = damaged(request, UDP, "chksum")
            passed = testrun.run(parts["xdp_cache"].fd, damaged_request)
            assert (passed.verdict, passed.packet) == (XDP_PASS, damaged_request)
            client.close()
    finally:
        compiled.bpf.cleanup()
