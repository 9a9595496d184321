"""Servers that run inside a namespace (the user-space DNS server, NSD): started, waited for,
and stopped by process id, never by name, so that nothing else on the machine is touched.

A server must not outlive the process that started it (bpflab.processes says why): the kernel
kills it if its parent dies without stopping it (kill -9 of a grader or a notebook kernel included).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bpflab.processes import die_with_parent, stop

if TYPE_CHECKING:
    from bpflab.cgroups import ProgramCgroup


class NetnsServer:
    """A server process in netns `netns`, its output in `log`; ready once `ready` is logged; in
    `cgroup` if one is given (a sock_ops program's, bpflab.cgroups), from its first instruction.

    Start it from the thread that stays alive (the main thread): the death signal follows the
    thread that forked it.
    """

    def __init__(self, netns: str, argv: Sequence[str], log: Path, ready: str,
                 timeout: float = 20, cgroup: ProgramCgroup | None = None) -> None:
        self.log = Path(log)
        self.name = argv[0]
        command = ["ip", "netns", "exec", netns, *argv]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                cgroup.argv(command) if cgroup else command, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
            )
        self._wait_for(ready, timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, done: Callable[[str], bool], timeout: float) -> bool:
        """Wait until `done(output)` holds; False if time runs out or the server exits first.

        A server logs a query after it has answered it, so a client holding its answer may not
        see the line yet: anything that reads the log after traffic waits here.
        """
        deadline = time.monotonic() + timeout
        while not done(self.output()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _wait_for(self, ready: str, timeout: float) -> None:
        if not self.wait_until(lambda output: ready in output, timeout):
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n{self.output()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL if it lingers; always reaped."""
        stop(self.process)

    def __enter__(self) -> NetnsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
