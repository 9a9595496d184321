"""The gym runtime: exercises found in one file, each compiled and verified on its own; and the
maps tour, which measures every kind of map in one run (figures printed, never asserted)."""

from __future__ import annotations

import warnings

import pytest

from bpflab.gym import exercises, load_gym, without
from bpflab.maps_tour import STOPS, Tour, cpus, trace_lines
from bpflab.programs import CompilerWarning

HEAD = '#include "parsing.h"\n'
GOOD = "int ex_{0}(struct xdp_md *ctx)\n{{\n\treturn XDP_PASS;\n}}\n"
TOO_BIG = "int ex_{0}(struct xdp_md *ctx)\n{{\n\tvolatile __u8 buf[600];\n\tbuf[0] = 1;\n" \
    "\treturn buf[ctx->rx_queue_index % 600] ? XDP_PASS : XDP_DROP;\n}}\n"
TYPO = "int ex_{0}(struct xdp_md *ctx)\n{{\n\treturn XDP_PASS\n}}\n"
UNCHECKED = "int ex_{0}(struct xdp_md *ctx)\n{{\n\tstruct ethhdr *eth = (void *)(long)ctx->data;\n" \
    "\treturn eth->h_proto ? XDP_PASS : XDP_DROP;\n}}\n"


def gym_text(*bodies: str) -> str:
    parts = [HEAD]
    for number, body in enumerate(bodies, 1):
        parts.append(f"/* ===== Exercise {number}: e{number} ===== */\n" + body.format(number))
    return "".join(parts)


def test_exercises_are_found_with_their_lines_and_blanking_keeps_line_numbers():
    text = gym_text(GOOD, TYPO, GOOD)
    found = exercises(text)
    assert [(e.name, e.entry) for e in found] == [("e1", "ex_1"), ("e2", "ex_2"), ("e3", "ex_3")]
    blanked = without(text, [found[1]])
    assert len(blanked.splitlines()) == len(text.splitlines())
    assert "ex_2" not in blanked and "ex_3" in blanked


def test_one_exercise_that_does_not_compile_holds_back_no_other(tmp_path):
    """A clang error, LLVM's fatal stack refusal and a verifier refusal: each stays with its own."""
    source = tmp_path / "gym.c"
    source.write_text(gym_text(GOOD, TOO_BIG, TYPO, UNCHECKED, GOOD))
    gym = load_gym(source)
    try:
        assert set(gym.programs) == {"e1", "e5"}
        assert gym.refused["e2"].stage == "compile" and "512 bytes" in gym.refused["e2"].explain()
        assert gym.refused["e3"].stage == "compile" and "gym.c:" in gym.refused["e3"].explain()
        assert gym.refused["e4"].stage == "verify" and "data_end" in gym.refused["e4"].explain()
        assert "accepted" in gym.report("e1")
    finally:
        gym.close()


def test_warnings_belong_to_their_exercise(tmp_path):
    source = tmp_path / "gym.c"
    source.write_text(gym_text(GOOD, "int ex_{0}(struct xdp_md *ctx)\n{{\n\treturn 7;\n}}\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        gym = load_gym(source)
    try:
        assert gym.warnings("e1") == []
        assert "not an XDP action" in gym.warnings("e2")[0]
    finally:
        gym.close()


def test_wrong_marker_content_is_refused():
    with pytest.raises(ValueError, match="exactly one XDP entry"):
        exercises(HEAD + "/* ===== Exercise 1: empty ===== */\nstatic int x;\n")


def test_maps_tour_measures_every_stop_and_delivers_its_events(capsys):
    with Tour() as tour:
        costs = tour.costs(repeat=2000)
        events = tour.events()
    assert [cost.name for cost in costs] == [name for name, _, _ in STOPS]
    assert all(cost.ns > 0 for cost in costs)
    assert events == 2000 + 2000 // len(cpus()) * len(cpus())  # one CPU, then shared by every CPU
    assert any("tour: protocol 17" in line for line in trace_lines(200))
    with capsys.disabled():  # figures for a person, as the benchmarks print them: never asserted
        for cost in costs:
            print(f"\nmaps tour: {cost.name:14} {cost.above_parsing:+6.0f} ns above parsing alone")
