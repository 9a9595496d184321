"""The grading service run for tests and benchmarks: `grader serve` on the server side of a
Topology, its clients on the client side (the network rule: traffic only between namespaces the
caller made), and the processes a grade runs in, by pid.

The service is started with nsenter, not `ip netns exec`, which would mount a /sys of its own
where the grader finds no memory cgroup.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bpflab.course.labs import ROOT, load_lab
from bpflab.processes import die_with_parent, stop
from bpflab.topology import Topology, in_netns
from grader.serve import add_token
from grader.service_config import PORT

STARTUP = 30  # seconds for the service (and its workers) to answer /health
WAIT = 900  # seconds a request waits for its grade


@dataclass
class Service:
    url: str
    token: str
    log: Path
    netns: str  # the clients'
    process: subprocess.Popen | None = None  # the service's, when this harness started it

    def post(self, lab: str, student: str, program: bytes, token: str | None = None, wait: float = WAIT,
             timeout: float = WAIT + 30) -> httpx.Response:
        """One submission, sent from the client namespace."""
        with in_netns(self.netns), httpx.Client(timeout=timeout) as client:
            return client.post(f"{self.url}/v1/grade", params={"wait": wait},
                               headers={"Authorization": f"Bearer {token or self.token}"},
                               data={"lab": lab, "student": student},
                               files={"file": (load_lab(lab).program, program)})

    def get(self, path: str) -> httpx.Response:
        with in_netns(self.netns), httpx.Client(timeout=30) as client:
            return client.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"})

    def wait_until_ready(self, process: subprocess.Popen, ready: int = 200) -> None:
        """Return once /health answers `ready`; fail, with the log, if `process` ends first."""
        deadline = time.monotonic() + STARTUP
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if self.get("/health").status_code == ready:
                    return
            assert process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.2)

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if re.search(pattern, line)]


@contextlib.contextmanager
def running_service(net: Topology, folder: Path, *options: str, ready: int = 200) -> Iterator[Service]:
    """`grader serve` on the server side of `net`, with its own log, stopped by pid at the end;
    yielded once /health answers `ready` (503 while it has no workers, none started with it)."""
    tokens = folder / "tokens.toml"
    token = add_token(tokens, "test-course")
    log = folder / "service.log"
    argv = ["nsenter", f"--net=/run/netns/{net.server.netns}", sys.executable, "-m", "grader", "serve",
            "--host", net.server.ipv4, "--port", str(PORT), "--tokens", str(tokens), *options]
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, preexec_fn=die_with_parent)  # nsenter execs
    service = Service(f"http://{net.server.ipv4}:{PORT}", token, log, net.client.netns, process)
    try:
        service.wait_until_ready(process, ready)
        yield service
    finally:
        stop(process, grace=60)


def grading_children() -> set[int]:
    """The pids of graded runs (grader.child, not a listing run) on this machine now."""
    found = set()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            command = (proc / "cmdline").read_bytes()
            if b"grader.child" in command and b"--collect-only" not in command:
                found.add(int(proc.name))
    return found


def grading_under(worker: int) -> bool:
    """Whether a worker (its horse's child, so the worker's grandchild) is grading now."""
    return any(parent_of(parent_of(child)) == worker for child in grading_children())


def parent_of(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def wait_until(condition: Callable[[], object], seconds: float) -> bool:
    """Whether `condition()` came true within `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
