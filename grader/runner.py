"""Run a lab's graded suite on one submission and collect points per test.

The suite runs with the grader's own pytest configuration only: the submission folder is
passed as an option and never becomes a rootdir, so a `conftest.py` or `pytest.ini` that a
student adds there is never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bpflab.labs import GRADER_TESTS, Lab
from bpflab.programs import ProgramError
from grader.checks import Mismatch


@dataclass
class TestResult:
    name: str  # the test's docstring: what behaviour it checks, in plain words
    nodeid: str
    max_score: float
    score: float = 0.0
    output: str = ""

    @property
    def passed(self) -> bool:
        return self.score == self.max_score


@dataclass
class LabResult:
    lab: Lab
    submission: Path
    tests: list[TestResult] = field(default_factory=list)
    problem: str = ""  # why nothing could run (no file, compile or verifier failure)
    exit_code: int = 0  # pytest's; non-zero values other than "tests failed" are grader faults

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tests)

    @property
    def max_score(self) -> float:
        return sum(t.max_score for t in self.tests)


def plain_words(excinfo: pytest.ExceptionInfo) -> str:
    """A failure as a student should read it: our own messages as they are, others in brief."""
    error = excinfo.value
    if isinstance(error, Mismatch):
        return str(error)
    if isinstance(error, ProgramError):
        return error.explain()
    return f"The test could not complete: {type(error).__name__}: {error}"


class Collector:
    """pytest plugin: turns each graded test's outcome into points and feedback."""

    def __init__(self, result: LabResult) -> None:
        self.result = result
        self.by_id: dict[str, TestResult] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("points")
            if marker is None:
                raise pytest.UsageError(f"{item.nodeid} has no @points(n)")
            doc = (getattr(item.obj, "__doc__", None) or item.name).strip().splitlines()[0]
            test = TestResult(name=doc, nodeid=item.nodeid, max_score=float(marker.args[0]))
            self.by_id[item.nodeid] = test
            self.result.tests.append(test)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        test = self.by_id[item.nodeid]
        if report.when == "call" and report.passed:
            test.score = test.max_score
        elif report.failed and call.excinfo is not None:
            test.score = 0.0
            test.output = plain_words(call.excinfo)
            if report.when == "setup" and isinstance(call.excinfo.value, ProgramError):
                self.result.problem = call.excinfo.value.explain()


def grade(lab: Lab, submission: Path, extra_args: tuple[str, ...] = ()) -> LabResult:
    """Grade `submission` (a folder holding the lab's program file) on `lab`."""
    result = LabResult(lab=lab, submission=submission)
    args = [
        str(lab.suite),
        f"--submission={submission.resolve()}",
        f"--rootdir={GRADER_TESTS.parent}",
        "-c", str(GRADER_TESTS.parent / "pytest.ini"),
        "-p", "no:cacheprovider",
        "-q", "--no-header", "-rN", "--tb=no",
        *extra_args,
    ]
    result.exit_code = int(pytest.main(args, plugins=[Collector(result)]))
    return result
