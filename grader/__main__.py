"""python -m grader: grade a submission on a lab, or list the labs.

Every graded run happens in a limited child process (see grader/isolation.py).

Exit status: 0 when the submission was graded (whatever its score), 1 when the grader itself
failed (a fault to report, not a grade), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

from bpflab.course.labs import all_labs, load_lab
from bpflab.processes import sigterm_as_interrupt
from grader.isolation import Interrupted, Limits, grade, grader_fault, machine_limits, prepare
from grader.report import summary, write_results
from grader.service_config import BROKER_ENV, PORT, RATE_LIMIT, RATE_WINDOW


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gradescope"]:  # a parser of its own: grader/gradescope.py
        from grader.gradescope import main as gradescope

        return gradescope(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("grade", help="grade one submission folder on one lab")
    one.add_argument("submission", type=Path, nargs="?",
                     help="folder holding the lab's program file (default: the lab's reference)")
    one.add_argument("--lab", required=True, help="lab id, e.g. hello-xdp (see `list`)")
    one.add_argument("--results", type=Path, help="write Gradescope results.json here")
    add_limits(one)
    batch = commands.add_parser("batch", help="grade a class: one folder per student")
    batch.add_argument("submissions", type=Path, help="one folder per student (or <student>/submission/)")
    batch.add_argument("--out", type=Path, required=True, help="folder for the results")
    batch.add_argument("--labs", nargs="+", help="lab ids (default: every lab)")
    batch.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                       help="graders at once (default: the cores)")
    add_limits(batch)
    split = commands.add_parser("shard", help="split a class into folders of whole students, for a fleet")
    split.add_argument("submissions", type=Path)
    split.add_argument("--shards", type=int, required=True)
    split.add_argument("--out", type=Path, required=True, help="gets one folder per shard: 0, 1, ...")
    merge = commands.add_parser("merge", help="merge the results folders of sharded batches")
    merge.add_argument("shards", type=Path, nargs="+", help="results folders of `batch` runs")
    merge.add_argument("--out", type=Path, required=True)
    commands.add_parser("list", help="list the labs")
    add_service(commands)
    commands.add_parser("gradescope", add_help=False,
                        help="build LAB's Gradescope autograder zip (dist/gradescope/LAB.zip)")
    args = parser.parse_args(argv)
    if args.command in ("serve", "worker", "token"):
        return service(args)

    if args.command == "batch":
        from grader import batch as batches  # tqdm and matplotlib: only for classes

        if not args.submissions.is_dir():
            parser.error(f"{args.submissions} is not a folder")
        try:
            labs = [load_lab(lab) for lab in args.labs] if args.labs else all_labs()
        except KeyError as exc:
            parser.error(str(exc.args[0]))
        return batches.run(args.submissions, args.out, labs, max(args.jobs, 1), limits(args))
    if args.command == "shard":
        from grader.batch import shard

        for folder in shard(args.submissions, args.shards, args.out):
            print(folder)
        return 0
    if args.command == "merge":
        from grader.batch import merge as merge_shards

        return merge_shards(args.shards, args.out)

    if args.command == "list":
        for lab in all_labs():
            print(f"{lab.id:12} {lab.hook or lab.kind:9} {lab.points:3} points  {lab.program:22} {lab.title}")
        return 0

    try:
        lab = load_lab(args.lab)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    if args.submission is None:
        args.submission = lab.reference.parent
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


def add_service(commands: argparse._SubParsersAction) -> None:

    serve = commands.add_parser("serve", help="grade over HTTP (Gradescope, any LMS): see grader/serve.py")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s; "
                                                           "put TLS in front with a reverse proxy)")
    serve.add_argument("--port", type=int, default=PORT)
    serve.add_argument("--redis", default=os.environ.get(BROKER_ENV),
                       help=f"the broker's URL (default: ${BROKER_ENV}, else a private Redis of its own)")
    serve.add_argument("--jobs", type=int, default=1, help="grading workers started here "
                                                           "(0: only other hosts' workers grade)")
    serve.add_argument("--tokens", type=Path, required=True, help="the courses' token digests (TOML)")
    serve.add_argument("--rate-limit", type=int, default=RATE_LIMIT, help="submissions per student "
                                                                          "per window (default %(default)s)")
    serve.add_argument("--rate-window", type=int, default=RATE_WINDOW, help="seconds (default %(default)s)")
    worker = commands.add_parser("worker", help="grade jobs from a grading service's broker")
    worker.add_argument("--redis", default=os.environ.get(BROKER_ENV),
                        help=f"the broker's URL, e.g. redis://:PASSWORD@host:6379/0 (default: ${BROKER_ENV}, "
                             "which keeps a password out of `ps`)")
    worker.add_argument("--jobs", type=int, default=1, help="grades at once on this host (default 1)")
    token = commands.add_parser("token", help="make a course's bearer token for `serve` (printed once)")
    token.add_argument("course")
    token.add_argument("--tokens", type=Path, required=True, help="the TOML file `serve --tokens` reads")


def service(args: argparse.Namespace) -> int:
    """The grading service's commands: serve, worker, token."""
    if args.command == "token":
        from grader.serve import add_token

        print(add_token(args.tokens, args.course))
        return 0
    if args.command == "serve":
        from grader.serve import run

        return run(args.host, args.port, args.redis, max(args.jobs, 0), args.tokens, args.rate_limit,
                   args.rate_window)
    from grader import broker, jobs

    if not args.redis:
        print(f"grader worker: name the broker with --redis URL or ${BROKER_ENV}", file=sys.stderr)
        return 2
    if args.jobs <= 1:
        jobs.work(args.redis)
        return 0
    ended = None
    with sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt), \
            broker.workers(args.redis, args.jobs) as started:
        while ended is None:  # until SIGTERM: then each worker finishes its grade and stops
            ended = next((process for process in started if process.poll() is not None), None)
            time.sleep(0.5)
    if ended is not None:  # one died unasked: all stop, and the exit status says so (systemd restarts)
        print(f"grader worker: worker {ended.pid} ended with status {ended.returncode}", file=sys.stderr)
        return 1
    return 0


def add_limits(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    slower = ", longer on a slower machine (a VM under emulation)"
    parser.add_argument("--time-limit", type=float,
                        help=f"seconds for one lab's whole graded run (default {defaults.seconds:g}{slower})")
    parser.add_argument("--compile-limit", type=float,
                        help=f"seconds to compile and load the program (default {defaults.compile_seconds:g}"
                             f"{slower})")
    parser.add_argument("--memory-limit", type=int, default=defaults.memory >> 20,
                        help="MiB of memory for a graded run, BPF maps included (default %(default)s)")


def limits(args: argparse.Namespace) -> Limits:
    """The limits asked for; those not given are the defaults, stretched for this machine's speed."""
    machine = machine_limits()
    return dataclasses.replace(machine, seconds=args.time_limit or machine.seconds,
                               compile_seconds=args.compile_limit or machine.compile_seconds,
                               memory=args.memory_limit << 20)


if __name__ == "__main__":
    sys.exit(main())
