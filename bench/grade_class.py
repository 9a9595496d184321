"""Grade a synthetic class in one batch and print how long it took.

    .venv/bin/python bench/grade_class.py [--students-per-kind N] [--jobs J]

The class (at least 30 students) is made in a temporary folder: references of every lab,
starters (`bpflab.course.starters`), broken echo servers (the variants tests/test_grader.py grades)
and the hostile set (tests/hostile.py). It is graded by `python -m grader batch`, progress bar
and all; then the wall time, the median time of one student's whole submission and the median
per lab are printed. Figures, not assertions: targets are a student's every lab in 60 s or
less, and 100 students in 20 minutes or less on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bpflab.course.labs import ROOT, all_labs, load_lab
from bpflab.course.starters import starter_source
from tests.hostile import COMPILE_LIMIT, make_hostile_class
from tests.test_grader import ECHO_VARIANTS


def make_class(root: Path, per_kind: int) -> int:
    """Write the class under `root`; return how many students it has."""
    labs = all_labs()
    for i in range(per_kind):
        for kind, text in (("reference", lambda lab: lab.reference.read_text()),
                           ("starter", lambda lab: starter_source(lab.reference.read_text()))):
            folder = root / f"{kind}-{i}"
            folder.mkdir()
            for lab in labs:
                (folder / lab.program).write_text(text(lab))
    for lab_id, variants in ECHO_VARIANTS.items():
        lab = load_lab(lab_id)
        for name, (edits, _, _) in variants.items():
            text = lab.reference.read_text()
            for old, new in edits:
                text = text.replace(old, new)
            (root / f"{lab_id}-{name}").mkdir()
            (root / f"{lab_id}-{name}" / lab.program).write_text(text)
    make_hostile_class(root, prefix="hostile-")
    return sum(1 for _ in root.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students-per-kind", type=int, default=4, help="references and starters each")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bpflab-class-") as folder:
        root = Path(folder)
        (root / "class").mkdir()
        students = make_class(root / "class", args.students_per_kind)
        print(f"{students} students, {args.jobs} workers, {os.cpu_count()} cores", flush=True)
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "grader", "batch", str(root / "class"), "--out",
                               str(root / "out"), "--jobs", str(args.jobs), "--compile-limit",
                               str(COMPILE_LIMIT)], cwd=ROOT, check=False)
        wall = time.monotonic() - start
        with (root / "out" / "timings.csv").open() as f:
            rows = list(csv.DictReader(f))
    per_student: dict[str, float] = defaultdict(float)
    per_lab: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        per_student[row["student"]] += float(row["seconds"])
        per_lab[row["lab"]].append(float(row["seconds"]))
    print(f"batch exit status {done.returncode}")
    print(f"wall time for the class: {wall:.1f} s ({len(rows)} graded submission×lab pairs)")
    print(f"median per submission (one student's every lab, one worker): "
          f"{statistics.median(per_student.values()):.1f} s")
    full = [per_student[s] for s in per_student if s.startswith("reference-")]
    print(f"median per reference submission (all {len(all_labs())} labs): {statistics.median(full):.1f} s")
    for lab, seconds in per_lab.items():
        print(f"  {lab:10} median {statistics.median(seconds):5.1f} s, max {max(seconds):5.1f} s, "
              f"{len(seconds)} graded")
    print(f"projected for 100 such students: {wall * 100 / students / 60:.1f} min")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
