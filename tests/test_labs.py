"""Every lab is complete and consistent: one name, found by every part of the course."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib

import pytest

from bpflab.course.labs import GRADER_TESTS, NOTEBOOKS_DIR, all_labs, load_lab

LABS = all_labs()


def suite_tests(lab, suite=None) -> dict[str, int]:
    """The suite's tests and their points (@points(n)), its own and those it imports."""
    suite = suite or lab.suite
    sys.path.insert(0, str(GRADER_TESTS))  # as pytest does for the suites: shared modules import
    try:
        spec = importlib.util.spec_from_file_location(suite.stem, suite)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(GRADER_TESTS))
    tests = {}
    for name in dir(module):
        if name.startswith("test_"):
            marks = [m for m in getattr(getattr(module, name), "pytestmark", []) if m.name == "points"]
            assert len(marks) == 1, f"{suite.name}::{name} needs exactly one @points(n)"
            tests[name] = marks[0].args[0]
    return tests


def test_there_are_labs():
    assert "hello-xdp" in [lab.id for lab in LABS]


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.id)
def test_lab_has_every_part(lab):
    assert lab.reference.is_file()
    if lab.is_program:
        assert f"int {lab.entry}(" in lab.reference.read_text()
    else:
        assert tomllib.loads(lab.reference.read_text()), "a question set's key holds the answers"
    assert lab.suite.is_file()
    assert (lab.folder / "README.md").is_file()
    assert (NOTEBOOKS_DIR / f"{lab.notebook}.py").is_file()
    assert (NOTEBOOKS_DIR / f"{lab.notebook}.ipynb").is_file()
    assert f'LAB = "{lab.id}"' in lab.suite.read_text()


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.id)
def test_suite_points_add_up_to_the_manifest(lab):
    assert sum(suite_tests(lab).values()) + lab.hidden_points == lab.points
    hidden = sum(suite_tests(lab, lab.hidden_suite).values()) if lab.hidden_suite.is_file() else 0
    assert hidden == lab.hidden_points, "hidden_points in lab.toml must be the hidden suite's points"


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.id)
def test_handout_grading_table_matches_the_suite(lab):
    """A handout row `| `test_x` | n | ...` for every graded test, with its points."""
    rows = dict(re.findall(r"^\| `(test_\w+)` \| (\d+) \|", (lab.folder / "README.md").read_text(), re.M))
    assert {name: int(n) for name, n in rows.items()} == suite_tests(lab)


def test_unknown_lab_names_the_known_ones():
    with pytest.raises(KeyError, match="hello-xdp"):
        load_lab("no-such-lab")


def test_measure_handout_shows_the_recorded_run():
    """The handout's table is the recorded run's, so questions, plots and table agree."""
    from bpflab.tools.bench_report import recorded_figures, table

    lab = load_lab("measure")
    handout = (lab.folder / "README.md").read_text()
    shown = handout.split("<!-- recorded-table -->")[1].strip().removeprefix("```").removesuffix("```")
    assert shown.strip("\n") == table(recorded_figures(json.loads((lab.folder / "bench.json").read_text())))
    assert all((lab.folder / png).is_file() for png in ("rtt_cdf.png", "dns_qps.png"))
