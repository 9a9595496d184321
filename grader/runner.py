"""Run a lab's graded suites on one submission and collect points per test.

The suites run with the grader's own pytest configuration only: the submission folder is
passed as an option and never becomes a rootdir, so a `conftest.py` or `pytest.ini` that a
student adds there is never loaded. This runs student code in-process: the grader calls it only
inside the limited child process of `grader.isolation`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from bpflab.course.labs import GRADER_TESTS, HIDDEN_TESTS, Lab
from bpflab.programs import Program, ProgramError
from grader.checks import Mismatch


@dataclass
class TestResult:
    name: str  # the test's docstring: what behaviour it checks, in plain words
    nodeid: str
    max_score: float
    score: float = 0.0
    output: str = ""
    hidden: bool = False  # instructor-only: counted, but its output is withheld from students

    @property
    def passed(self) -> bool:
        return self.score == self.max_score

    @property
    def informational(self) -> bool:
        """Worth no points (a leaderboard figure): it is reported, never as a pass or a failure."""
        return self.max_score == 0

    @property
    def mark(self) -> str:
        return "INFO" if self.informational else "PASS" if self.passed else "FAIL"


@dataclass
class LabResult:
    lab: Lab
    submission: Path
    tests: list[TestResult] = field(default_factory=list)
    problem: str = ""  # why nothing could run (no file, compile or verifier failure)
    notes: str = ""  # what the program will get wrong though it loads (compiler warnings), and where
    exit_code: int = 0  # pytest's; non-zero values other than "tests failed" are grader faults
    leaderboard: list[dict] = field(default_factory=list)  # Gradescope entries: name, value, order

    @property
    def score(self) -> float:
        return sum(t.score for t in self.tests)

    @property
    def max_score(self) -> float:
        return sum(t.max_score for t in self.tests)

    def test(self, nodeid: str) -> TestResult:
        return next(t for t in self.tests if t.nodeid == nodeid)


def plain_words(excinfo: pytest.ExceptionInfo) -> str:
    """A failure as a student should read it: our own messages as they are, others in brief."""
    error = excinfo.value
    if isinstance(error, Mismatch):
        return str(error)
    if isinstance(error, ProgramError):
        return error.explain()
    return f"The test could not complete: {type(error).__name__}: {error}"


Event = Callable[[dict], None]


class Collector:
    """pytest plugin: turns each graded test's outcome into points and feedback.

    `report` hears of each step as it happens (the tests collected, the program loaded, each
    test's result), so that a supervisor that has to stop a run still knows what was graded.
    """

    def __init__(self, result: LabResult, report: Event = lambda event: None) -> None:
        self.result = result
        self.report = report
        self.by_id: dict[str, TestResult] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("points")
            if marker is None:
                raise pytest.UsageError(f"{item.nodeid} has no @points(n)")
            doc = (getattr(item.obj, "__doc__", None) or "").strip()
            if not doc:  # its first line is what the student reads for this test
                raise pytest.UsageError(f"{item.nodeid} has no docstring saying what it checks")
            doc = doc.splitlines()[0]
            test = TestResult(name=doc, nodeid=item.nodeid, max_score=float(marker.args[0]),
                              hidden=item.path.is_relative_to(HIDDEN_TESTS))
            self.by_id[item.nodeid] = test
            self.result.tests.append(test)
        self.report({"event": "collected", "tests": [asdict(t) for t in self.result.tests]})

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.report({"event": "start", "nodeid": nodeid})

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
        outcome = yield
        if fixturedef.argname in ("program", "gym"):  # a gym's warnings go with each exercise's test
            loaded = fixturedef.cached_result[0] if fixturedef.cached_result and not outcome.excinfo else None
            self.result.notes = "\n".join(loaded.warnings) if isinstance(loaded, Program) else ""
            self.report({"event": "loaded", "notes": self.result.notes})

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        test = self.by_id[nodeid]
        self.report({"event": "result", "nodeid": nodeid, "score": test.score, "output": test.output,
                     "problem": self.result.problem})

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        test = self.by_id[item.nodeid]
        if report.when == "call" and report.passed:
            test.score = test.max_score
            for key, entry in item.user_properties:
                if key == LEADERBOARD:  # record_property(LEADERBOARD, {"name", "value", "order"})
                    self.result.leaderboard.append(entry)
                    self.report({"event": "leaderboard", **entry})
        elif report.failed and call.excinfo is not None:
            test.score = 0.0
            test.output = plain_words(call.excinfo)
            if test.informational:
                test.output = f"Not measured (no points are lost): {test.output}"
            if report.when == "setup" and isinstance(call.excinfo.value, ProgramError):
                self.result.problem = call.excinfo.value.explain()


LEADERBOARD = "leaderboard"


def run_suites(lab: Lab, submission: Path, hidden: bool = True, report: Event = lambda event: None,
               extra_args: tuple[str, ...] = ()) -> LabResult:
    """Run `lab`'s suites on `submission` (a folder holding the lab's program file), in-process."""
    result = LabResult(lab=lab, submission=submission)
    args = [
        *map(str, lab.suites(hidden)),
        f"--submission={submission.resolve()}",
        f"--rootdir={GRADER_TESTS.parent}",
        "-c", str(GRADER_TESTS.parent / "pytest.ini"),
        "-p", "no:cacheprovider",
        "-q", "--no-header", "-rN", "--tb=no",
        *extra_args,
    ]
    result.exit_code = int(pytest.main(args, plugins=[Collector(result, report)]))
    return result
