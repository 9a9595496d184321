"""python -m grader: grade a submission on a lab, or list the labs.

Every graded run happens in a limited child process (see grader/isolation.py).

Exit status: 0 when the submission was graded (whatever its score), 1 when the grader itself
failed (a fault to report, not a grade), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bpflab.labs import Lab, all_labs, load_lab
from grader.isolation import Interrupted, Limits, grade, prepare
from grader.report import summary, write_results
from grader.runner import LabResult

GRADED = (0, 1)  # pytest: all passed, some tests failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("grade", help="grade one submission folder on one lab")
    one.add_argument("submission", type=Path, help="folder holding the lab's program file")
    one.add_argument("--lab", required=True, help="lab id, e.g. hello-xdp (see `list`)")
    one.add_argument("--results", type=Path, help="write Gradescope results.json here")
    add_limits(one)
    commands.add_parser("list", help="list the labs")
    args = parser.parse_args(argv)

    if args.command == "list":
        for lab in all_labs():
            print(f"{lab.id:12} {lab.hook:4} {lab.points:3} points  {lab.program:20} {lab.title}")
        return 0

    try:
        lab = load_lab(args.lab)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    if not args.submission.is_dir():
        parser.error(f"{args.submission} is not a folder (a submission is a folder holding {lab.program})")
    prepare()
    try:
        result = grade(lab, args.submission, limits(args))
    except (Interrupted, KeyboardInterrupt):
        result = None
    if result is None or result.exit_code == 2:
        print("Interrupted: nothing graded.", file=sys.stderr)
        return 130
    if fault := grader_fault(result):
        print(fault, file=sys.stderr)
        return 1
    if args.results:
        write_results(result, args.results)
    print(summary(result))
    return 0


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


def add_limits(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    parser.add_argument("--time-limit", type=float, default=defaults.seconds,
                        help="seconds for one lab's whole graded run (default %(default)s)")
    parser.add_argument("--compile-limit", type=float, default=defaults.compile_seconds,
                        help="seconds to compile and load the program (default %(default)s)")
    parser.add_argument("--memory-limit", type=int, default=defaults.memory >> 20,
                        help="MiB of memory for a graded run, BPF maps included (default %(default)s)")


def limits(args: argparse.Namespace) -> Limits:
    return Limits(args.time_limit, args.compile_limit, args.memory_limit << 20)


if __name__ == "__main__":
    sys.exit(main())
