"""BPF_PROG_TEST_RUN through libbpf: verdicts, output bytes, timing, and its traps."""

from __future__ import annotations

import os

import pytest
from scapy.packet import raw

from bpflab import packets, testrun
from bpflab.programs import BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, load_raw

XDP_PASS, XDP_DROP, TC_ACT_SHOT = 2, 1, 2


@pytest.fixture
def xdp_drop():
    fd = load_raw(BPF_PROG_TYPE_XDP, XDP_DROP, "drop")
    yield fd
    os.close(fd)


def test_verdict_and_bytes_come_back(xdp_drop):
    frame = raw(packets.udp_v4())
    result = testrun.run(xdp_drop, frame)
    assert result.verdict == XDP_DROP
    assert result.packet == frame


def test_tc_programs_run_too():
    fd = load_raw(BPF_PROG_TYPE_SCHED_CLS, TC_ACT_SHOT, "shot")
    try:
        assert testrun.run(fd, raw(packets.tcp_v4())).verdict == TC_ACT_SHOT
    finally:
        os.close(fd)


def test_repeats_report_a_mean_duration(xdp_drop):
    assert testrun.run(xdp_drop, raw(packets.udp_v4()), repeat=10_000).ns_per_run > 0


def test_frames_shorter_than_ethernet_are_refused(xdp_drop):
    with pytest.raises(OSError, match="Invalid argument"):
        testrun.run(xdp_drop, b"\x00" * (packets.ETH_HLEN - 1))


def test_live_frames_mode_sends_real_frames():
    """Live-frames mode as a load generator: a program's XDP_TX frames leave the interface."""
    import json
    import socket

    from bpflab.programs import attach_xdp
    from bpflab.topology import Topology, in_netns, run_in

    sender = load_raw(BPF_PROG_TYPE_XDP, 3, "tx")  # XDP_TX
    receiver = load_raw(BPF_PROG_TYPE_XDP, XDP_PASS, "rx")
    try:
        with Topology(peer_xdp=False) as topo:
            # XDP_TX on a veth needs an XDP program on the peer: the server end here.
            attach_xdp(topo.server.netns, topo.server.ifname, receiver)

            def received() -> int:
                shown = run_in(topo.server.netns, ["ip", "-s", "-j", "link", "show", topo.server.ifname])
                return json.loads(shown.stdout)[0]["stats64"]["rx"]["packets"]

            before = received()
            with in_netns(topo.client.netns):
                ifindex = socket.if_nametoindex(topo.client.ifname)
                ns = testrun.live_frames(sender, raw(packets.udp_v4()), ifindex, count=10_000)
            assert ns > 0
            assert received() - before >= 10_000
    finally:
        os.close(sender)
        os.close(receiver)
