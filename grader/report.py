"""Gradescope's results.json, the plain-text summary and the Markdown feedback a student reads.

Instructor-only (hidden) tests count in every score, but Gradescope shows them only once grades
are published (`visibility: after_published`), and the Markdown feedback gives only their total.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bpflab.course.labs import load_lab
from grader.runner import LabResult, TestResult


def gradescope_test(test: TestResult, prefix: str = "") -> dict:
    out = {
        "name": prefix + test.name,
        "score": test.score,
        "max_score": test.max_score,
        "status": "passed" if test.passed else "failed",
        "output": test.output,
        "visibility": "after_published" if test.hidden else "visible",
    }
    if test.informational:  # Gradescope shows a test without a status in neither green nor red
        del out["status"]
    return out


def score_of(test: TestResult) -> str:
    """`2/3`, or `--` for a test worth nothing: `0/0` would read as a result."""
    return "--" if test.informational else f"{test.score:g}/{test.max_score:g}"


def public_line(result: LabResult) -> str:
    """`lab: score/max` over the public tests only: a visible total that counted hidden tests would
    tell a student how the hidden ones went, an oracle for multiple-choice questions."""
    public = [t for t in result.tests if not t.hidden]
    line = f"{result.lab.id}: {sum(t.score for t in public):g}/{sum(t.max_score for t in public):g}"
    hidden = sum(t.max_score for t in result.tests if t.hidden)
    return line + (f" (and {hidden:g} points of instructor-only tests, shown when grades are published)"
                   if hidden else "")


def gradescope(result: LabResult) -> dict:
    """The Gradescope autograder results format (score, per-test name/score/max_score/output)."""
    out = {
        "score": result.score,
        "max_score": result.max_score,
        "output": result.problem or "\n\n".join(filter(None, [public_line(result), result.notes])),
        "tests": [gradescope_test(test) for test in result.tests],
    }
    if result.leaderboard:
        out["leaderboard"] = result.leaderboard
    return out


def gradescope_student(results: list[LabResult]) -> dict:
    """One student's results.json over several labs: tests named `lab: behaviour`."""
    out = {
        "score": sum(r.score for r in results),
        "max_score": sum(r.max_score for r in results),
        "output": "\n".join(public_line(r) for r in results),
        "tests": [gradescope_test(test, f"{r.lab.id}: ") for r in results for test in r.tests],
    }
    entries = [entry | {"name": f"{r.lab.id}: {entry['name']}"} for r in results for entry in r.leaderboard]
    if entries:
        out["leaderboard"] = entries
    return out


def feedback(student: str, results: list[LabResult]) -> str:
    """Markdown feedback for a student: public tests in full, hidden ones as a withheld total."""
    lines = [f"# Feedback for {student}", ""]
    for result in results:
        public = [t for t in result.tests if not t.hidden]
        hidden = [t for t in result.tests if t.hidden]
        score, most = sum(t.score for t in public), sum(t.max_score for t in public)
        lines += [f"## {result.lab.id}: {result.lab.title}", "", f"Public tests: **{score:g}/{most:g}**", ""]
        if result.problem:
            lines += ["Nothing could be tested:", "", "```", result.problem, "```", ""]
        if result.notes:
            lines += ["The program loads, but the compiler and the course's checks warn:", "", "```",
                      result.notes, "```", ""]
        for test in public:
            lines.append(f"- {test.mark} {score_of(test)}: {test.name}")
            if test.output and not result.problem:
                lines += ["", "  ```", *(f"  {line}" for line in test.output.splitlines()), "  ```", ""]
        if hidden:
            lines += ["", f"Instructor-only tests: {sum(t.max_score for t in hidden):g} points, "
                      "shown when grades are published."]
        lines.append("")
    return "\n".join(lines)


def record(result: LabResult) -> dict:
    """Everything about a lab's grade, for the class outputs and for merging shards."""
    return {"lab": result.lab.id, "problem": result.problem, "notes": result.notes,
            "exit_code": result.exit_code, "tests": [asdict(test) for test in result.tests],
            "leaderboard": result.leaderboard}


def from_record(data: dict, submission: Path) -> LabResult:
    return LabResult(lab=load_lab(data["lab"]), submission=submission, problem=data["problem"],
                     notes=data.get("notes", ""),
                     exit_code=data["exit_code"], tests=[TestResult(**test) for test in data["tests"]],
                     leaderboard=data.get("leaderboard", []))


def write_results(result: LabResult, path: Path) -> None:
    path.write_text(json.dumps(gradescope(result), indent=2) + "\n")


def summary(result: LabResult) -> str:
    """`Score: X/Y`, one line per test, and the reason of each failure, indented."""
    lines = [f"{result.lab.id} ({result.lab.title}) — {result.submission}"]
    if result.problem:
        lines += ["", "Nothing could be tested:", *("  " + line for line in result.problem.splitlines()), ""]
    if result.notes:
        lines += ["", "The program loads, but warnings say what it will get wrong:",
                  *("  " + line for line in result.notes.splitlines()), ""]
    for test in result.tests:
        lines.append(f"  [{test.mark}] {score_of(test)}  {test.name}")
        if test.output and not result.problem:
            lines += ["         " + line for line in test.output.splitlines()]
    lines.append(f"Score: {result.score:g}/{result.max_score:g}")
    return "\n".join(lines)
