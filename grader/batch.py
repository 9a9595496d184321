"""Grade a whole class: `python -m grader batch SUBMISSIONS --out RESULTS [--labs ...] [--jobs N]`.

SUBMISSIONS holds one folder per student, named after the student. A student's files are either
in that folder or, as in a Gradescope export, in a `submission/` folder inside it. Each student
is graded on every lab whose program file is there (all of them, at 0 and with the reason, when
none is). Anything else at the top (files, symlinks) is not a student and is skipped.

Each (student, lab) pair is one limited child process (grader.isolation); `--jobs` of them run
at once, each with namespaces named after its own pid, so they cannot collide. RESULTS gets, per
student, `results.json` (Gradescope), `feedback.md` and `grades.json` (the record the class
outputs and `merge` are made from), and for the class those of grader.gradebook plus
`timings.csv` (seconds per graded pair).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from tqdm import tqdm

from bpflab.course.labs import Lab
from bpflab.processes import restore_sigterm, sigterm_interrupts
from grader.gradebook import RECORD, write_class
from grader.isolation import Interrupted, Limits, grade, grader_fault, machine_limits, prepare
from grader.report import feedback, gradescope_student, record
from grader.runner import LabResult

GRADESCOPE_FOLDER = "submission"
TIMINGS = "timings.csv"


def students(submissions: Path) -> dict[str, Path]:
    """Student name → the folder holding their files."""
    found = {}
    for entry in sorted(submissions.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            inner = entry / GRADESCOPE_FOLDER
            found[entry.name] = inner if inner.is_dir() and not inner.is_symlink() else entry
    return found


def pairs(folders: dict[str, Path], labs: list[Lab]) -> list[tuple[str, Lab]]:
    """What to grade: each student on each lab whose program file is present (a symlink counts,
    to be refused with a reason), or on every lab when none is."""
    todo = []
    for student, folder in folders.items():
        present = [lab for lab in labs if os.path.lexists(folder / lab.program)]
        todo += [(student, lab) for lab in present or labs]
    return todo


def write_student(out: Path, student: str, results: list[LabResult]) -> None:
    """A student's results.json, feedback.md and grades.json; only this process writes them."""
    folder = out / student
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(gradescope_student(results), indent=2) + "\n")
    (folder / "feedback.md").write_text(feedback(student, results))
    (folder / RECORD).write_text(json.dumps({"student": student, "labs": [record(r) for r in results]},
                                            indent=1) + "\n")


def run(submissions: Path, out: Path, labs: list[Lab], jobs: int, limits: Limits | None = None) -> int:
    """Grade the class; return the exit status (0 graded, 1 with grader faults, 130 interrupted)."""
    prepare()
    limits = limits or machine_limits()
    folders = students(submissions)
    todo = pairs(folders, labs)
    out.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    graded: dict[str, list[LabResult]] = defaultdict(list)
    remaining = defaultdict(int)
    for student, _ in todo:
        remaining[student] += 1
    timings: list[tuple[str, str, float]] = []
    faults: list[str] = []

    def one(student: str, lab: Lab) -> tuple[str, LabResult, float]:
        start = time.monotonic()
        return student, grade(lab, folders[student], limits, stop=stop), time.monotonic() - start

    old_term = sigterm_interrupts()  # SIGTERM stops a batch the way Ctrl-C does
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="grade")
    try:
        futures: set[Future] = {pool.submit(one, student, lab) for student, lab in todo}
        with tqdm(total=len(todo), unit="grade", desc="grading", file=sys.stderr) as bar:
            while futures:
                done, futures = wait(futures, timeout=1, return_when=FIRST_COMPLETED)
                for future in done:
                    student, result, seconds = future.result()
                    if problem := grader_fault(result):
                        faults.append(f"{student}/{result.lab.id}: {problem}")
                    graded[student].append(result)
                    timings.append((student, result.lab.id, seconds))
                    remaining[student] -= 1
                    if not remaining[student]:
                        write_student(out, student, sorted(graded[student], key=lambda r: labs.index(r.lab)))
                    bar.update()
    except (KeyboardInterrupt, Interrupted):
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        print("Interrupted: the students graded so far are written; the rest are not.", file=sys.stderr)
        return 130
    finally:
        restore_sigterm(old_term)
        pool.shutdown(wait=True)
    write_timings(out / TIMINGS, timings)
    write_class(out)
    for problem in faults:
        print(f"grader fault: {problem}", file=sys.stderr)
    return 1 if faults else 0


def write_timings(path: Path, timings: list[tuple[str, str, float]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "lab", "seconds"])
        writer.writerows((s, lab, f"{t:.2f}") for s, lab, t in sorted(timings))


def shard(submissions: Path, count: int, out: Path) -> list[Path]:
    """Split a class into `count` folders of whole students (dealt in name order), for a fleet.

    Symlinks are copied as symlinks: a hostile one is still refused on the grading host.
    """
    shards = [out / str(i) for i in range(count)]
    for folder in shards:
        folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(students(submissions)):
        shutil.copytree(submissions / name, shards[i % count] / name, symlinks=True)
    return shards


def merge(shards: list[Path], out: Path) -> int:
    """Gather the students of several batches' RESULTS folders into `out`, then write the class
    outputs again from all of them: the gradebook of a sharded class equals a single batch's."""
    out.mkdir(parents=True, exist_ok=True)
    timings: list[list[str]] = []
    for shard in shards:
        for record_path in sorted(shard.glob(f"*/{RECORD}")):
            student = record_path.parent
            if (out / student.name).exists():
                print(f"{student.name} is in more than one shard", file=sys.stderr)
                return 1
            shutil.copytree(student, out / student.name)
        if (shard / TIMINGS).is_file():
            with (shard / TIMINGS).open() as f:
                timings += list(csv.reader(f))[1:]
    write_timings(out / TIMINGS, [(s, lab, float(t)) for s, lab, t in timings])
    write_class(out)
    return 0
