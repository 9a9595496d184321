"""Gradescope's results.json and the plain-text summary a student reads."""

from __future__ import annotations

import json
from pathlib import Path

from grader.runner import LabResult


def gradescope(result: LabResult) -> dict:
    """The Gradescope autograder results format (score, per-test name/score/max_score/output)."""
    return {
        "score": result.score,
        "max_score": result.max_score,
        "output": result.problem or f"{result.lab.id}: {result.score:g}/{result.max_score:g}",
        "tests": [
            {
                "name": test.name,
                "score": test.score,
                "max_score": test.max_score,
                "status": "passed" if test.passed else "failed",
                "output": test.output,
                "visibility": "visible",
            }
            for test in result.tests
        ],
    }


def write_results(result: LabResult, path: Path) -> None:
    path.write_text(json.dumps(gradescope(result), indent=2) + "\n")


def summary(result: LabResult) -> str:
    """`Score: X/Y`, one line per test, and the reason of each failure, indented."""
    lines = [f"{result.lab.id} ({result.lab.title}) — {result.submission}"]
    if result.problem:
        lines += ["", "Nothing could be tested:", *("  " + line for line in result.problem.splitlines()), ""]
    for test in result.tests:
        mark = "PASS" if test.passed else "FAIL"
        lines.append(f"  [{mark}] {test.score:g}/{test.max_score:g}  {test.name}")
        if test.output and not result.problem:
            lines += ["         " + line for line in test.output.splitlines()]
    lines.append(f"Score: {result.score:g}/{result.max_score:g}")
    return "\n".join(lines)
