"""Shared helpers of the package's own tests. Every test must leave no namespace behind."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import netns

from bpflab.labs import ROOT
from bpflab.topology import NAME_PREFIX


def our_namespaces() -> list[str]:
    return [name for name in netns.listnetns() if name.startswith(f"{NAME_PREFIX}-")]


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
    """Fail any test after which a namespace of ours (and so a veth, XDP or TC program) remains."""
    before = set(our_namespaces())
    yield
    left = set(our_namespaces()) - before
    assert not left, f"namespaces left behind: {sorted(left)}"


@dataclass
class Graded:
    exit_code: int
    stdout: str
    stderr: str
    results: dict


def run_grader(submission: Path, lab: str, tmp_path: Path) -> Graded:
    """Grade through the real CLI, as a student or CI would."""
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "grader", "grade", str(submission), "--lab", lab, "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    data = json.loads(results.read_text()) if results.exists() else {}
    return Graded(done.returncode, done.stdout, done.stderr, data)


def submission_with(tmp_path: Path, filename: str, text: str) -> Path:
    """A submission folder holding one program file."""
    folder = tmp_path / "submission"
    folder.mkdir(exist_ok=True)
    (folder / filename).write_text(text)
    return folder
