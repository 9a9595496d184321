"""The batch grader on a hostile class: every trick scored with its reason, nothing left behind.

One batch grades the whole hostile set (tests/hostile.py) through the real CLI: real BCC, real
kernel, real veth pairs. The tests then read what it wrote.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bpflab.course.labs import ROOT, load_lab
from grader import cgroup
from tests.conftest import grading_child, submission_with
from tests.hostile import CANARY_ENV, CASES, COMPILE_LIMIT, LAB, make_hostile_class
from tests.test_topology import namespaces_of, wait_for_namespaces

XDP_ICMP = load_lab("xdp-icmp")
REFERENCE_STUDENT = "reference-with-cheating-conftest"
STALL_LIMIT = 30  # seconds; lab 0 reaches its topology in about 5


def batch(submissions: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", "batch", str(submissions), "--out", str(out),
                           "--jobs", "2", *options], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


def our_cgroups() -> list[Path]:
    """Memory cgroups this test run's graders made (their names carry the grader's pid)."""
    parents = [p for p in (cgroup.v1_parent(), cgroup.v2_parent()) if p is not None and p.is_dir()]
    return [path for parent in parents for path in parent.glob("bpflab-grade-*")
            if cgroup.is_stale(path.name)]


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("class")
    canary = root / "canary"
    os.environ[CANARY_ENV] = str(canary)
    try:
        make_hostile_class(root / "submissions")
    finally:
        del os.environ[CANARY_ENV]
    # The reference student also hands in xdp-icmp: the lab with an instructor-only test.
    (root / "submissions" / REFERENCE_STUDENT / "submission" / XDP_ICMP.program).write_text(
        XDP_ICMP.reference.read_text())
    done = batch(root / "submissions", root / "out", "--labs", LAB.id, XDP_ICMP.id,
                 "--compile-limit", str(COMPILE_LIMIT))
    return root, done


def grades_of(out: Path, student: str) -> dict:
    return {lab["lab"]: lab for lab in json.loads((out / student / "grades.json").read_text())["labs"]}


def test_the_batch_grades_everyone(graded):
    root, done = graded
    assert done.returncode == 0, done.stderr[-3000:]
    assert "grading: 100%" in done.stderr  # the progress bar
    with (root / "out" / "gradebook.csv").open() as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(CASES)
    assert rows[REFERENCE_STUDENT][XDP_ICMP.id] == str(XDP_ICMP.points)
    assert rows["compile-error"][XDP_ICMP.id] == ""  # not handed in: not graded
    assert not (root / "canary").exists(), "the student's conftest.py was loaded"
    assert not our_cgroups()


@pytest.mark.parametrize("name", CASES)
def test_each_hostile_case_gets_its_score_and_reason(graded, name):
    root, _ = graded
    case = CASES[name]
    labs = grades_of(root / "out", name)
    lab = labs[LAB.id]
    assert sum(t["score"] for t in lab["tests"]) == case.score
    said = lab["problem"] + "\n".join(t["output"] for t in lab["tests"])
    assert case.says in said, said
    results = json.loads((root / "out" / name / "results.json").read_text())
    assert results["score"] == sum(t["score"] for graded_lab in labs.values() for t in graded_lab["tests"])
    assert case.says in (root / "out" / name / "feedback.md").read_text()


def test_compiler_messages_quote_nothing_outside_the_submission(graded):
    root, _ = graded
    for name in CASES:
        text = (root / "out" / name / "results.json").read_text()
        assert "root:x:0:0" not in text and "/usr/src" not in text and "from pathlib" not in text


def test_hidden_tests_count_but_stay_hidden_from_students(graded):
    root, _ = graded
    out = root / "out" / REFERENCE_STUDENT
    hidden = [t for t in grades_of(root / "out", REFERENCE_STUDENT)[XDP_ICMP.id]["tests"] if t["hidden"]]
    assert hidden and sum(t["max_score"] for t in hidden) == XDP_ICMP.hidden_points
    results = json.loads((out / "results.json").read_text())
    shown = {t["name"].split(": ", 1)[1]: t["visibility"] for t in results["tests"]}
    assert all(shown[t["name"]] == "after_published" for t in hidden)
    assert list(shown.values()).count("visible") == len(shown) - len(hidden)
    feedback = (out / "feedback.md").read_text()
    assert not any(t["name"] in feedback for t in hidden)
    assert f"Instructor-only tests: {XDP_ICMP.hidden_points} points" in feedback


def test_class_outputs(graded):
    root, _ = graded
    junit = ET.parse(root / "out" / "junit.xml").getroot()
    suites = {suite.get("name") for suite in junit}
    assert f"{REFERENCE_STUDENT}/{XDP_ICMP.id}" in suites and f"huge-map/{LAB.id}" in suites
    assert (root / "out" / "summary.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_past_its_time_limit_keeps_what_it_finished(tmp_path):
    """A run that hangs is stopped at its limit; the tests it finished keep their points.

    A reference run of lab 0 takes a few seconds, so no limit makes it overrun reliably. Instead
    the graded child is frozen (SIGSTOP) as soon as its topology's first namespace exists: the
    three test-run tests (5 points) come first and need none, so they have finished, and the
    two ping tests have not begun. That is a hang, as a stuck test would be, at a known point:
    the grader must stop the run, score what it heard, and remove the frozen child's namespaces.
    """
    folder = submission_with(tmp_path, LAB.program, LAB.reference.read_text())
    results = tmp_path / "results.json"
    grader = subprocess.Popen([sys.executable, "-m", "grader", "grade", str(folder), "--lab", LAB.id,
                               "--time-limit", str(STALL_LIMIT), "--results", str(results)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        child = grading_child(grader.pid)
        wait_for_namespaces(child, count=1)
        os.kill(child, signal.SIGSTOP)
        stdout, stderr = grader.communicate(timeout=STALL_LIMIT + 60)
    finally:  # a grader that never stops its frozen child must not outlive the test
        if grader.poll() is None:
            grader.kill()
            grader.wait()
    assert grader.returncode == 0, stderr
    tests = json.loads(results.read_text())["tests"]  # in the suite's order
    message = f"went past its time limit of {STALL_LIMIT} s"
    stopped = [t for t in tests if message in t["output"]]
    finished = [t for t in tests if t not in stopped]
    # What came before the freeze keeps its points; the rest has none and says why. A test
    # process slow to poll could freeze a little later, in the first ping test, so 4 is fine.
    assert len(finished) in (3, 4) and tests[:len(finished)] == finished, stdout
    assert all(t["score"] == t["max_score"] for t in finished), stdout
    assert stopped and all(t["score"] == 0 for t in stopped), stdout
    assert not namespaces_of(child)


def test_ctrl_c_stops_a_batch_and_leaves_nothing(tmp_path):
    for student in ("ann", "ben", "cid"):
        (tmp_path / "class" / student).mkdir(parents=True)
        (tmp_path / "class" / student / LAB.program).write_text(LAB.reference.read_text())
    grader = subprocess.Popen([sys.executable, "-m", "grader", "batch", str(tmp_path / "class"), "--out",
                               str(tmp_path / "out"), "--labs", LAB.id, "--jobs", "2"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_namespaces(grading_child(grader.pid))
    grader.send_signal(signal.SIGINT)
    assert grader.wait(90) == 130, grader.stderr.read()[-2000:]
    assert not our_cgroups()
