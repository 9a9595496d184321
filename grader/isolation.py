"""Grade one submission on one lab with its code kept at arm's length.

Design: the whole graded run of a submission on a lab (compile, load, every test) happens in one
child process, `grader.child`, because the tests need the loaded program's fd and BCC compiles
in-process (only a separate process can be stopped mid-compile). The child runs in a memory
cgroup of its own (grader.cgroup), in a session of its own (so it and whatever it started can be
killed as a group), dies with its parent (PR_SET_PDEATHSIG), and sees a fresh folder holding only
the screened program (grader.sandbox). It reports its steps as JSON lines on a pipe; this process
checks them and is the only one that writes results. A compile+load that takes longer than
`compile_seconds`, a run longer than `seconds`, a crash or an out-of-memory kill stops the child:
the tests it finished keep their points, the others get 0 and a message saying what happened.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bpflab import cgroups, topology
from bpflab.course.labs import ROOT, Lab
from bpflab.processes import owned_temp_folder
from grader import cgroup
from grader.cgroup import MEMORY_LIMIT, MemoryCgroup
from grader.runner import LabResult, TestResult
from grader.sandbox import Rejected, read_program

GRADED = (0, 1)  # pytest's exit codes when every test ran: all passed, some failed
TERM_GRACE = 15  # seconds a stopped child has to remove its namespaces before SIGKILL
MAX_NOTES = 4000  # characters of warnings taken from a child: enough for a dozen, no flood


class Interrupted(Exception):
    """The grader was asked to stop (Ctrl-C, SIGTERM): nothing was graded."""


@dataclass(frozen=True)
class Limits:
    seconds: float = 300  # one lab's whole graded run; the longest reference run takes ~20 s
    compile_seconds: float = 30  # compile and load; a reference takes 4-6 s (a trial compile first)
    memory: int = MEMORY_LIMIT
    startup_seconds: float = 120  # Python, pytest and scapy starting up, on a loaded machine


# The time limits are for this course's machines (a reference compiles in 4-6 s). A machine many
# times slower, such as a VM under QEMU's emulation when the host has no KVM (where a reference
# took over 30 s to compile), gets limits as many times longer: a right program must not fail
# there for the machine's sake. How much slower: a fixed piece of Python, against the time it
# takes on a typical machine (0.035 s where the course is developed), best of 3.
CALIBRATION_SECONDS = 0.05
MAX_SLOWNESS = 20.0


def slowness() -> float:
    """How many times slower than a typical machine this one runs Python (1 at least)."""
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        best = min(best, time.perf_counter() - start)
    return min(max(best / CALIBRATION_SECONDS, 1.0), MAX_SLOWNESS)


def machine_limits() -> Limits:
    """The default limits, stretched for a machine slower than the course's (see `slowness`)."""
    factor, defaults = slowness(), Limits()
    return Limits(round(defaults.seconds * factor), round(defaults.compile_seconds * factor), defaults.memory,
                  round(defaults.startup_seconds * factor))


def expected_points(lab: Lab) -> int:
    """The manifest's points, less the hidden tests' where this copy (a student's) has none."""
    return lab.points if lab.hidden_suite.is_file() else lab.points - lab.hidden_points


def grader_fault(result: LabResult) -> str:
    """Why `result` is not a grade but a fault of the grader, or ''."""
    lab = result.lab
    if result.exit_code not in GRADED or result.max_score != expected_points(lab):
        return (f"grader fault: pytest exit {result.exit_code}, {result.max_score:g} points found for "
                f"{lab.id} whose manifest says {expected_points(lab)}\n{result.problem}")
    return ""


def prepare() -> None:
    """Remove what killed graders left: namespaces and cgroups of processes that are gone."""
    topology.cleanup_stale()
    cgroup.cleanup_stale()
    cgroups.cleanup_stale()


def grade(lab: Lab, submission: Path, limits: Limits | None = None, hidden: bool = True,
          stop: threading.Event | None = None) -> LabResult:
    """Grade `submission` (a folder) on `lab`; `stop`, once set, ends the run with Interrupted."""
    try:
        text = read_program(lab, submission)
    except Rejected as exc:
        return zero(lab, submission, str(exc), hidden)
    with owned_temp_folder("bpflab-submission-") as folder:  # a killed grader's goes at the next grade
        (folder / lab.program).write_text(text, encoding="utf-8")
        result = Supervisor(lab, folder, limits or machine_limits(), hidden, stop).run()
    result.submission = submission
    return result


@functools.cache
def collected(lab: Lab, hidden: bool) -> tuple[TestResult, ...]:
    """The lab's tests, listed by a child that runs nothing (no student code involved)."""
    with tempfile.TemporaryDirectory(prefix="bpflab-collect-") as folder:
        result = Supervisor(lab, Path(folder), machine_limits(), hidden, None, collect_only=True).run()
    if not result.tests:
        raise RuntimeError(f"cannot list the tests of {lab.id}: {result.problem}")
    return tuple(result.tests)


def zero(lab: Lab, submission: Path, message: str, hidden: bool) -> LabResult:
    """Every test of the lab at 0 points, with `message` as the reason."""
    tests = [TestResult(t.name, t.nodeid, t.max_score, 0.0, message, t.hidden)
             for t in collected(lab, hidden)]
    return LabResult(lab=lab, submission=submission, tests=tests, problem=message, exit_code=1)


class Supervisor:
    """Runs the child, reads its reports, enforces the limits, and always cleans up after it."""

    def __init__(self, lab: Lab, folder: Path, limits: Limits, hidden: bool,
                 stop: threading.Event | None, collect_only: bool = False) -> None:
        self.lab, self.folder, self.limits, self.hidden, self.stop = lab, folder, limits, hidden, stop
        self.collect_only = collect_only
        self.result = LabResult(lab=lab, submission=folder, exit_code=-1)
        self.started: str | None = None  # nodeid of the test running now
        self.collected_at: float | None = None
        self.loaded = False
        self.done = False

    def run(self) -> LabResult:
        limit = MemoryCgroup(self.limits.memory) if not self.collect_only else None
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "grader.child", self.lab.id, str(self.folder), str(write_fd),
                f"--parent={os.getpid()}",
                *(["--public"] if not self.hidden else []),
                *(["--collect-only"] if self.collect_only else []),
                *(["--cgroup", str(limit.procs)] if limit and limit.procs else [])]
        with tempfile.TemporaryFile() as stderr:
            child = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=stderr, pass_fds=(write_fd,), start_new_session=True)
            os.close(write_fd)
            stopped = "interrupted"  # unless `follow` returns: Ctrl-C, or a fault of this process
            try:
                stopped = self.follow(read_fd, child)
            except KeyboardInterrupt:
                pass
            finally:
                os.close(read_fd)
                self.end(child, graceful=stopped == "interrupted")
                if limit:
                    oom = limit.oom_killed()
                    limit.remove()
            if stopped == "interrupted":
                raise Interrupted
            if not self.done and not stopped:
                stopped = "oom" if limit and oom else f"crash:{child.returncode}"
            if stopped:
                self.stopped(stopped)
            elif self.result.exit_code not in GRADED:
                stderr.seek(0)
                self.result.problem = stderr.read().decode(errors="replace")[-3000:]
        return self.result

    def deadline(self, start: float) -> tuple[float, str]:
        """When the current phase must end, and what it is called."""
        whole = (start + self.limits.seconds, "time")
        if self.collected_at is None:
            return min((start + self.limits.startup_seconds, "startup"), whole)
        if not self.loaded and not any(t.output or t.score for t in self.result.tests):
            return min((self.collected_at + self.limits.compile_seconds, "compile"), whole)
        return whole

    def follow(self, fd: int, child: subprocess.Popen) -> str:
        """Read the child's reports until it is done; '' or why it had to be stopped."""
        start = time.monotonic()
        pending = b""
        while True:
            if self.stop is not None and self.stop.is_set():
                return "interrupted"
            end, phase = self.deadline(start)
            if time.monotonic() >= end:
                return phase
            ready, _, _ = select.select([fd], [], [], min(0.5, max(0.0, end - time.monotonic())))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.hear(line)

    def hear(self, line: bytes) -> None:
        """Take in one report, believing only what fits what the suites declared."""
        try:
            event = json.loads(line)
            kind = event["event"]
            if kind == "collected" and self.collected_at is None:
                self.result.tests = [TestResult(**test) for test in event["tests"]]
                self.collected_at = time.monotonic()
            elif kind == "loaded":
                self.loaded = True
                self.result.notes = str(event.get("notes", ""))[:MAX_NOTES]
            elif kind == "start":
                self.started = self.result.test(event["nodeid"]).nodeid
            elif kind == "result":
                test = self.result.test(event["nodeid"])
                test.score = min(max(float(event["score"]), 0.0), test.max_score)
                test.output = str(event["output"])
                self.result.problem = str(event["problem"])
                self.started = None
            elif kind == "leaderboard":
                self.result.leaderboard.append(leaderboard_entry(event))
            elif kind == "done":
                self.result.exit_code = int(event["exit_code"])
                self.done = True
        except (ValueError, KeyError, TypeError, StopIteration):
            return

    def end(self, child: subprocess.Popen, graceful: bool) -> None:
        """Stop the child's whole session and remove any namespace it left."""
        if graceful and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)  # the topology turns it into a clean exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(TERM_GRACE)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if not self.done:
            topology.cleanup_stale(pid=child.pid)

    def stopped(self, why: str) -> None:
        """Score a run that had to be stopped: what finished counts, the rest gets a reason."""
        program, limits = self.lab.program, self.limits
        if why in ("compile", "startup"):
            message = f"Compiling and loading {program} took longer than {limits.compile_seconds:g} s: " \
                      "it was stopped."
        elif why == "oom":
            message = f"{program} needed more than {limits.memory / 2**30:g} GiB of memory to compile, " \
                      "load or run (a map too large?): it was stopped."
        elif why == "time":
            message = f"The graded run went past its time limit of {limits.seconds:g} s: it was stopped."
        else:
            message = f"The graded run stopped unexpectedly (exit status {why.split(':')[1]})."
        if not self.result.tests:
            self.result.tests = [TestResult(t.name, t.nodeid, t.max_score, hidden=t.hidden)
                                 for t in collected(self.lab, self.hidden)]
        unfinished = [t for t in self.result.tests if not t.output and not t.score]
        for test in unfinished:
            during = " This test was running then." if test.nodeid == self.started else ""
            test.output = message + during
        if not self.loaded or len(unfinished) == len(self.result.tests):
            self.result.problem = message
        self.result.exit_code = 1


def leaderboard_entry(event: dict) -> dict:
    """A leaderboard entry from the child, checked: the child runs student code, so nothing it
    says is written unchecked (a name of bounded length, a finite number, a known order)."""
    value = float(event["value"])
    if not math.isfinite(value) or event.get("order", "asc") not in ("asc", "desc"):
        raise ValueError(f"a malformed leaderboard entry: {event!r}")
    return {"name": str(event["name"])[:80], "value": value, "order": event.get("order", "asc")}
