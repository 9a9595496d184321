"""The limited child process that runs student code: `python -m grader.child LAB FOLDER FD`.

`grader.isolation` starts it inside a memory cgroup, in a session of its own, with FOLDER holding
nothing but the screened program file. It reports each step as one JSON line on file
descriptor FD and writes no file: only the parent, which checks what it reads, writes results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bpflab.course.labs import load_lab
from bpflab.processes import die_with_parent
from grader.runner import run_suites


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.child", description=__doc__.splitlines()[0])
    parser.add_argument("lab")
    parser.add_argument("folder", type=Path)
    parser.add_argument("fd", type=int, help="where the JSON lines go")
    parser.add_argument("--public", action="store_true", help="leave the hidden tests out")
    parser.add_argument("--collect-only", action="store_true", help="list the tests, run nothing")
    parser.add_argument("--parent", type=int, required=True, help="the grader's pid")
    parser.add_argument("--cgroup", type=Path, help="the cgroup.procs file of the memory cgroup to join")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)  # a hanging program must not outlive the grader, even its kill -9
    if args.cgroup:
        args.cgroup.write_text(str(os.getpid()))  # before any student code: maps are charged here
    events = os.fdopen(args.fd, "w", buffering=1)

    def report(event: dict) -> None:
        events.write(json.dumps(event) + "\n")

    extra = ("--collect-only",) if args.collect_only else ()
    result = run_suites(load_lab(args.lab), args.folder, not args.public, report, extra)
    report({"event": "done", "exit_code": result.exit_code})
    return 0


if __name__ == "__main__":
    sys.exit(main())
