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
