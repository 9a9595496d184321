"""The benchmark's stage profile times each frame over many repeats, which is right only for a
frame the program passes untouched: test-run hands every repeat the frame the last one left.
These tests check that property of every stage frame and of the helper-cost program; they time
nothing (the figures are `make bench`'s, printed beside their baselines, never asserted)."""

from __future__ import annotations

import pytest
from scapy.packet import raw

from bpflab import packets, testrun
from bpflab.course.labs import BPF_TOOLS
from bpflab.oracles import dns_answers, dns_records, echo
from bpflab.programs import load
from bpflab.tools.bench import load_program, stage_frames
from bpflab.verdicts import TC_ACT_OK, XDP_PASS

PASSED = {"xdp": XDP_PASS, "tc": TC_ACT_OK}


@pytest.mark.parametrize("lab_id", list(stage_frames()))
def test_every_stage_frame_is_passed_untouched(lab_id: str) -> None:
    """Each frame leaves the reference with a pass verdict and the bytes it came with."""
    program = load_program(lab_id)
    try:
        echo.configure(program)
        if lab_id == "xdp-dns":
            dns_answers.load_map(program, dns_records.load())
        for stage, frame, _ in stage_frames()[lab_id]:
            result = testrun.run(program.fd, frame)
            assert (result.verdict, result.packet) == (PASSED[program.hook], frame), stage
    finally:
        program.close()


def test_the_helper_cost_program_calls_and_leaves_the_frame_as_it_was() -> None:
    """Four bpf_skb_store_bytes() calls, each writing the MACs back over themselves."""
    frame = raw(packets.icmp_echo_v4())
    program = load(BPF_TOOLS / "helper_cost.c", "helper_cost", "tc", cflags=("-DCALLS=4",))
    try:
        result = testrun.run(program.fd, frame, repeat=10)
        assert (result.verdict, result.packet) == (TC_ACT_OK, frame)
    finally:
        program.close()
