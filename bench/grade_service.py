"""The grading service's speed, beside the grader's own in the same run.

    .venv/bin/python bench/grade_service.py [--runs N] [--submissions M] [--jobs J]

Latency: one hello-xdp reference at a time, N times, through `grader serve` (a client in one
namespace, the service in another, as tests/service.py sets them up), against N runs of `python
-m grader grade` on the same file (the baseline: what a student's `make check` costs); p50 and
p95 of each. Throughput: M hello-xdp references sent at once to the service with J workers,
against `grader batch --jobs J` on M students holding the same file; submissions per minute of
each. Figures, not assertions: what the service adds should be the queue's and HTTP's few
milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bpflab.course.labs import ROOT, load_lab
from bpflab.topology import Topology
from tests.service import running_service

LAB = load_lab("hello-xdp")


def percentiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):5.2f} s  p95 {p95:5.2f} s"


def timed(action) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def grade_cli(folder: Path) -> None:
    subprocess.run([sys.executable, "-m", "grader", "grade", str(folder), "--lab", LAB.id], cwd=ROOT,
                   capture_output=True, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="single submissions, one at a time")
    parser.add_argument("--submissions", type=int, default=40, help="sent at once for throughput")
    parser.add_argument("--jobs", type=int, default=2, help="grading workers (and batch graders)")
    args = parser.parse_args()
    program = LAB.reference.read_bytes()
    with tempfile.TemporaryDirectory(prefix="bpflab-bench-service-") as name:
        root = Path(name)
        (root / "one").mkdir()
        (root / "one" / LAB.program).write_bytes(program)
        cli = [timed(lambda: grade_cli(root / "one")) for _ in range(args.runs)]
        with Topology(peer_xdp=False) as net, running_service(net, root, "--jobs", str(args.jobs)) as service:
            def submit(student: str) -> None:  # each a student of their own: no rate limit met
                answer = service.post(LAB.id, student, program)
                assert answer.status_code == 200 and answer.json()["score"] == LAB.points, answer.text

            served = [timed(lambda i=i: submit(f"alone-{i}")) for i in range(args.runs)]
            students = [f"together-{i}" for i in range(args.submissions)]
            with ThreadPoolExecutor(args.submissions) as pool:
                burst = timed(lambda: list(pool.map(submit, students)))
        for i in range(args.submissions):
            (root / "class" / f"student-{i}").mkdir(parents=True)
            (root / "class" / f"student-{i}" / LAB.program).write_bytes(program)
        batch = timed(lambda: subprocess.run(
            [sys.executable, "-m", "grader", "batch", str(root / "class"), "--out", str(root / "out"),
             "--labs", LAB.id, "--jobs", str(args.jobs)], cwd=ROOT, capture_output=True, check=True))
    print(f"one {LAB.id} submission, {args.runs} times, one at a time:")
    print(f"  grader grade (baseline)   {percentiles(cli)}")
    print(f"  grader serve, over HTTP   {percentiles(served)}")
    print(f"{args.submissions} at once, {args.jobs} workers:")
    print(f"  grader batch (baseline)   {args.submissions / batch * 60:5.1f} per minute ({batch:.0f} s)")
    print(f"  grader serve              {args.submissions / burst * 60:5.1f} per minute ({burst:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
