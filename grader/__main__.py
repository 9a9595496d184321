"""python -m grader: grade a submission on a lab, or list the labs.

Exit status: 0 when the submission was graded (whatever its score), 1 when the grader itself
failed (a fault to report, not a grade), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bpflab.labs import all_labs, load_lab
from grader.report import summary, write_results
from grader.runner import grade

GRADED = (0, 1)  # pytest: all passed, some tests failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("grade", help="grade one submission folder on one lab")
    one.add_argument("submission", type=Path, help="folder holding the lab's program file")
    one.add_argument("--lab", required=True, help="lab id, e.g. hello-xdp (see `list`)")
    one.add_argument("--results", type=Path, help="write Gradescope results.json here")
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
    result = grade(lab, args.submission)
    if result.exit_code == 2:
        print("Interrupted: nothing graded.", file=sys.stderr)
        return 130
    if result.exit_code not in GRADED or result.max_score != lab.points:
        print(f"grader fault: pytest exit {result.exit_code}, {result.max_score:g} points found for "
              f"{lab.id} whose manifest says {lab.points}", file=sys.stderr)
        return 1
    if args.results:
        write_results(result, args.results)
    print(summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
