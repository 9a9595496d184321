"""The service's own processes: a private Redis when no broker is named, and grading workers.

Both are children of `grader serve`, started by the runtime and stopped by pid (never by
name: another Redis on the host is not ours), and they die with the service if it is killed
(PR_SET_PDEATHSIG). The private Redis listens on a Unix socket in a folder of its own, keeps
nothing on disk, and is gone with the service: the embedded default for one host.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

from redis.exceptions import ConnectionError as RedisConnectionError

from bpflab.course.labs import ROOT
from bpflab.processes import die_with_parent, owned_temp_folder, stop
from grader.isolation import TERM_GRACE, machine_limits
from grader.jobs import connect
from grader.service_config import BROKER_ENV

READY_SECONDS = 10.0


def stop_grace() -> float:
    """Seconds a stopped worker may take: it first finishes the grade it runs, which the grader's
    own limits bound (stretched on a slow machine, grader.isolation.machine_limits)."""
    limits = machine_limits()
    return limits.seconds + limits.startup_seconds + TERM_GRACE


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A Redis for this service only; yields its URL."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: run provisioning/grade_service.yml (or "
                         "apt-get install redis-server), or name a broker with --redis URL.")
    with owned_temp_folder("bpflab-broker-") as folder:  # a killed service's is removed by the next
        sock = folder / "redis.sock"
        argv = ["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", str(folder), "--loglevel", "warning"]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   preexec_fn=die_with_parent, start_new_session=True)  # not Ctrl-C's
        url = f"unix://{sock}"
        try:
            wait_for(url, process)
            yield url
        finally:
            stop(process)


def wait_for(url: str, process: subprocess.Popen | None = None) -> None:
    """Return once the broker at `url` answers; SystemExit if it does not in time."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        with contextlib.suppress(RedisConnectionError, FileNotFoundError):
            if connect(url).ping():
                return
        if (process and process.poll() is not None) or time.monotonic() > deadline:
            raise SystemExit(f"the broker at {url} does not answer")
        time.sleep(0.05)


@contextlib.contextmanager
def workers(url: str, count: int) -> Iterator[list[subprocess.Popen]]:
    """`count` grading workers (`python -m grader worker`) on the broker at `url`, stopped at the
    end: one SIGTERM each, on which RQ lets the grade under way finish (a second one within a
    second is ignored, a later one kills the grade: so exactly one). Each is a session of its
    own, so that a Ctrl-C at the service's terminal reaches the service alone. The broker's URL,
    password and all, goes in the environment, out of `ps`."""
    environment = {**os.environ, BROKER_ENV: url}
    started = [subprocess.Popen([sys.executable, "-m", "grader", "worker"], cwd=ROOT, env=environment,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent, start_new_session=True)
               for _ in range(count)]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + stop_grace()
        for process in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
            if process.poll() is None:
                process.kill()
                process.wait()
