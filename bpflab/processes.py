"""The processes the course starts, and how each one ends: once, for every tool that starts one.

Nothing may outlive the run that made it: a namespace stays alive, veth and all, while any
process is inside it, and a server left running answers the next run's traffic. So children die
with their parent (PR_SET_PDEATHSIG, which holds even for kill -9), are stopped by pid and never
by name (other users' processes are not ours), and SIGTERM unwinds a run as Ctrl-C does, so its
`with` blocks and `finally` clauses take down what it built.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1
HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def die_with_parent(parent: int | None = None) -> None:
    """In a child (preexec_fn, a pool's initializer): the kernel kills it if its parent dies.

    With `parent` (its pid, passed down), a child whose parent died before prctl took effect
    exits at once instead of running on as an orphan.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def pid_namespace() -> int:
    """This process's PID namespace (the inode number of /proc/self/ns/pid): a pid in a name
    (of a cgroup, say) means something only in the namespace that wrote it."""
    return os.stat("/proc/self/ns/pid").st_ino


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _interrupt(owner_pid: int, signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C in the process that asked for it.

    Children forked meanwhile (pyroute2 forks to open sockets in a netns) inherit the handler
    and are ended by SIGTERM: they must die as usual rather than unwind the parent's state.
    """
    if os.getpid() != owner_pid:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")


def sigterm_interrupts() -> signal.Handlers | object:
    """From now on SIGTERM raises KeyboardInterrupt in this process; returns the previous handler
    (for `restore_sigterm`), for life cycles that span calls, such as a notebook's topology."""
    return signal.signal(signal.SIGTERM, functools.partial(_interrupt, os.getpid()))


def restore_sigterm(previous: signal.Handlers | object) -> None:
    signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the body, SIGTERM raises KeyboardInterrupt (main thread only, as all handlers)."""
    previous = sigterm_interrupts()
    try:
        yield
    finally:
        restore_sigterm(previous)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while netlink work or a tear-down is under way: stopped half-way,
    pyroute2 can wait forever for a helper process that will never answer."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def stop(process: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """Stop a child by its pid: SIGTERM, SIGKILL if it lingers past `grace` s; always reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_pid(pid: int, grace: float = STOP_GRACE) -> None:
    """`stop` for a process known only by pid (one inside a namespace we made, say)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect a child's exit status, so that it does not linger as a zombie (alive to kill 0)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@contextlib.contextmanager
def owned_temp_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder named after this process (`<prefix><pid>-...`), removed at the end; a
    killed process cannot remove its own, so the folders of processes that are gone are removed
    first."""
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        owner = folder.name.removeprefix(prefix).split("-", 1)[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-") as folder:
        yield Path(folder)


def in_threads(work: Callable[[T], None], items: Iterable[T]) -> None:
    """`work(item)` for every item at once, each in a thread of its own; once all have ended, the
    first exception any of them raised is raised here, in the caller's thread."""
    errors: list[BaseException] = []

    def run(item: T) -> None:
        try:
            work(item)
        except BaseException as error:  # handed to the caller below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
