"""Shared helpers of the package's own tests. Every test must leave no namespace behind."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import netns

from bpflab.course.labs import ROOT
from bpflab.processes import pid_alive
from bpflab.topology import NETNS_NAME


def orphaned_namespaces() -> set[str]:
    """Namespaces of ours owned by this process or by one that is gone.

    Namespaces of other live processes (another suite or grader running beside this one) are
    not this test's doing, so they are left out.
    """
    names = set()
    for name in netns.listnetns():
        match = NETNS_NAME.match(name)
        if match and (int(match.group(1)) == os.getpid() or not pid_alive(int(match.group(1)))):
            names.add(name)
    return names


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building and provisioning the second toolchain's root (tests/test_toolchain.py) if its
    test is to run: debootstrap and apt then overlap the rest of the suite."""
    if not any(item.path.name == "test_toolchain.py" and item.get_closest_marker("slow")
               for item in session.items):
        return
    from bpflab.processes import die_with_parent

    out = ROOT / "artifacts" / "toolchain-trixie-prepare.out"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as sink:
        session.config.toolchain_prepare = subprocess.Popen(
            [sys.executable, "-m", "bpflab", "toolchain", "trixie", "--prepare",
             "--log", str(ROOT / "artifacts" / "toolchain-trixie-prepare.log")],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
    """Fail any test after which a namespace of ours (and so a veth, XDP or TC program) remains."""
    # Every name of ours that exists now, whoever owns it: a stale one from a killed run whose
    # pid a live process has since taken would otherwise turn "orphaned" during this test.
    before = {name for name in netns.listnetns() if NETNS_NAME.match(name)}
    yield
    left = orphaned_namespaces() - before
    assert not left, f"namespaces left behind: {sorted(left)}"


@dataclass
class Graded:
    exit_code: int
    stdout: str
    stderr: str
    results: dict


def run_grader(submission: Path | None, lab: str, tmp_path: Path) -> Graded:
    """Grade through the real CLI, as a student or CI would; no submission grades the reference."""
    results = tmp_path / "results.json"
    folder = [str(submission)] if submission else []
    done = subprocess.run(
        [sys.executable, "-m", "grader", "grade", *folder, "--lab", lab, "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    data = json.loads(results.read_text()) if results.exists() else {}
    return Graded(done.returncode, done.stdout, done.stderr, data)


def grading_child(grader: int, timeout: float = 60) -> int:
    """The pid of a limited child in which `grader` runs a submission (see grader/isolation.py):
    the namespaces of a graded run carry that pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError, IndexError):
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                command = (proc / "cmdline").read_bytes()
                if parent == grader and b"grader.child" in command and b"--collect-only" not in command:
                    return int(proc.name)
        time.sleep(0.1)
    raise AssertionError(f"grader {grader} started no graded run within {timeout} s")


def submission_with(tmp_path: Path, filename: str, text: str) -> Path:
    """A submission folder holding one program file."""
    folder = tmp_path / "submission"
    folder.mkdir(exist_ok=True)
    (folder / filename).write_text(text)
    return folder
