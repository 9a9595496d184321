"""BPF_PROG_TEST_RUN through libbpf: verdicts, output bytes, timing, and its traps."""

from __future__ import annotations

import os

import pytest
from scapy.packet import raw

from bpflab import packets, testrun
from bpflab.programs import BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, load_raw
from bpflab.verdicts import TC_ACT_SHOT, XDP_DROP, XDP_PASS, XDP_TX


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
    import socket
    import time

    from bpflab.attach import attach_xdp
    from bpflab.topology import Topology, in_netns, run_in

    count = 10_000
    sender = load_raw(BPF_PROG_TYPE_XDP, XDP_TX, "tx")
    receiver = load_raw(BPF_PROG_TYPE_XDP, XDP_PASS, "rx")
    try:
        with Topology(peer_xdp=False) as topo:
            # XDP_TX on a veth needs an XDP program on the peer: the server end here.
            attach_xdp(topo.server.netns, topo.server.ifname, receiver)

            def counters(end) -> dict[str, int]:
                """veth's own counters (ethtool -S): what its XDP paths sent, got and dropped."""
                shown = run_in(end.netns, ["ethtool", "-S", end.ifname]).stdout
                pairs = (line.split(":") for line in shown.splitlines()[1:])
                return {name.strip(): int(value) for name, value in pairs}

            def delta(end, name: str) -> int:
                return counters(end)[name] - before[end.netns, name]

            watched = ((topo.client, "tx_queue_0_xdp_xmit"), (topo.client, "tx_queue_0_xdp_xmit_errors"),
                       (topo.server, "rx_queue_0_xdp_packets"))
            before = {(end.netns, name): counters(end)[name] for end, name in watched}
            with in_netns(topo.client.netns):
                ifindex = socket.if_nametoindex(topo.client.ifname)
                ns = testrun.live_frames(sender, raw(packets.udp_v4()), ifindex, count=count)
            assert ns > 0
            # Every frame went out through veth's XDP transmit, or was refused by a full ring
            # there (which a load generator may meet on a busy machine).
            sent = delta(topo.client, "tx_queue_0_xdp_xmit")
            refused = delta(topo.client, "tx_queue_0_xdp_xmit_errors")
            assert sent + refused == count, (sent, refused)
            # The ring (256 frames) starts empty, so the first batch (live_frames sends 64 at a
            # time) always goes out; how many more do depends on when the peer's NAPI runs.
            assert sent >= 64, (sent, refused)
            # The peer's NAPI takes them asynchronously, later than the call returns on a busy
            # machine: wait until every frame sent has reached the peer's XDP program (the
            # kernel's own packets, IPv6 neighbour discovery, may come in too).
            deadline = time.monotonic() + 30
            while delta(topo.server, "rx_queue_0_xdp_packets") < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            assert delta(topo.server, "rx_queue_0_xdp_packets") >= sent
    finally:
        os.close(sender)
        os.close(receiver)
