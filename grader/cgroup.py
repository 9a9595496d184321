"""A memory cgroup for one graded run, so that a huge BPF map is refused at once.

The kernel charges BPF map memory to the memory cgroup of the process that creates the map.
Outside any limit, a program declaring a 16 GiB array is allocated for tens of seconds and may
succeed; inside a cgroup limited to MEMORY_LIMIT, map creation fails with ENOMEM in about a
second, and a compile that eats memory is killed by the cgroup's OOM killer alone.

cgroup v1 (a `memory` hierarchy, e.g. /sys/fs/cgroup/memory) gets a child of this process's own
memory cgroup; cgroup v2 (the unified tree at /sys/fs/cgroup) gets a child of the root, the one
cgroup where a v2 tree lets processes and limited children live side by side. Where neither
works, grading goes on without a memory limit and says so in a warning.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
import warnings
from pathlib import Path

from bpflab.processes import pid_alive, pid_namespace

MEMORY_LIMIT = 1 << 30  # a graded run (pytest, scapy, BCC) peaks near 300 MB
CGROUP_ROOT = Path("/sys/fs/cgroup")
# bpflab-grade-<PID namespace>-<pid>-<n>: a pid means something only in its own PID namespace. A
# grader in another one (the toolchain root's, bpflab/tools/toolchain.py, sees this machine's cgroups)
# would take our live graders for dead ones and remove their cgroups between mkdir and join.
NAME = re.compile(r"^bpflab-grade-(\d+)-(\d+)-\d+$")
REMOVE_SECONDS = 30  # killed processes leave the cgroup once reaped: a moment, more on a loaded machine
_counter = itertools.count()


def is_stale(name: str) -> bool:
    """A cgroup of ours whose grader is gone; never one made in another PID namespace."""
    match = NAME.match(name)
    return bool(match) and int(match[1]) == pid_namespace() and not pid_alive(int(match[2]))


def v1_parent() -> Path | None:
    """This process's own cgroup in a v1 memory hierarchy, if there is one mounted."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    roots = [line.split()[4] for line in mounts if " - cgroup " in line and "memory" in line.split()[-1]]
    if not roots:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path(roots[0]) / path.lstrip("/")
    return Path(roots[0])


def v2_parent() -> Path | None:
    """The root of a v2 tree whose children can take a memory limit."""
    controls = CGROUP_ROOT / "cgroup.subtree_control"
    if controls.is_file() and "memory" in controls.read_text().split():
        return CGROUP_ROOT
    return None


class MemoryCgroup:
    """One fresh cgroup limited to `limit` bytes; `path` is None where no limit could be set."""

    def __init__(self, limit: int = MEMORY_LIMIT) -> None:
        self.limit = limit
        self.path: Path | None = None
        self.procs: Path | None = None
        name = f"bpflab-grade-{pid_namespace()}-{os.getpid()}-{next(_counter)}"
        for parent, limit_file in ((v1_parent(), "memory.limit_in_bytes"), (v2_parent(), "memory.max")):
            if parent is None:
                continue
            try:
                path = parent / name
                path.mkdir()
                (path / limit_file).write_text(str(limit))
                if limit_file == "memory.max":
                    with contextlib.suppress(OSError):
                        (path / "memory.swap.max").write_text("0")
            except OSError as exc:
                with contextlib.suppress(OSError):
                    path.rmdir()
                warnings.warn(f"cannot make a memory cgroup under {parent}: {exc}", stacklevel=2)
                continue
            self.path, self.procs = path, path / "cgroup.procs"
            return
        warnings.warn("no usable memory cgroup (v1 memory controller or v2 with memory enabled): "
                      "submissions are graded WITHOUT a memory limit", stacklevel=2)

    def join(self) -> None:
        """Move the calling process in; run in the child between fork and exec."""
        if self.procs is not None:
            self.procs.write_text(str(os.getpid()))

    def oom_killed(self) -> bool:
        """Did the limit make the kernel kill a process of this cgroup?"""
        if self.path is None:
            return False
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            with contextlib.suppress(OSError):
                found = re.search(r"oom_kill (\d+)", (self.path / name).read_text())
                if found:
                    return int(found.group(1)) > 0
        return False

    def remove(self) -> None:
        """Remove the cgroup once its processes are gone (they may take a moment to be reaped)."""
        if self.path is None:
            return
        for _ in range(int(REMOVE_SECONDS / 0.1)):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


def cleanup_stale() -> list[Path]:
    """Remove the cgroups of graders that are gone (a kill -9 leaves them behind)."""
    removed = []
    for parent in (v1_parent(), v2_parent()):
        if parent is None or not parent.is_dir():
            continue
        for path in parent.iterdir():
            if is_stale(path.name):
                with contextlib.suppress(OSError):
                    path.rmdir()
                    removed.append(path)
    return removed
