"""Programs attached to a cgroup rather than to an interface: sock_ops, for lab tcp-state.

A sock_ops program runs on the TCP events (connection established, state change, RTT sample)
of the sockets that processes of its cgroup own. So the runtime makes one cgroup v2 of its own
per use, starts the server inside it (before the server opens a socket: a socket belongs to the
cgroup its process was in when it was made), attaches the program there, and on the way out
detaches it, kills what is left inside and removes the cgroup.

An attachment outlives the process that made it, so a killed run leaves its cgroup behind, with
the program still attached: the next `ProgramCgroup` (and `python -m bpflab cleanup`) removes
those whose run is gone, as `Topology` does for namespaces.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bpflab import libbpf
from bpflab.processes import pid_alive, pid_namespace

if TYPE_CHECKING:
    from bpflab.programs import Program

# bpflab-sockops-<PID namespace>-<pid>-<n>: the pid is the run's, valid in its own PID namespace.
NAME = re.compile(r"^bpflab-sockops-(\d+)-(\d+)-\d+$")
BPF_CGROUP_SOCK_OPS = 3  # enum bpf_attach_type (include/uapi/linux/bpf.h)
REMOVE_SECONDS = 10  # killed processes leave a cgroup once reaped: a moment
_counter = itertools.count()


def v2_root() -> Path:
    """Where the cgroup v2 tree is mounted: /sys/fs/cgroup on Debian 12 and 13, /sys/fs/cgroup/unified
    on a host that still mounts v1 hierarchies beside it."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount_point, fstype, *_ = line.split()
        if fstype == "cgroup2":
            return Path(mount_point)
    raise RuntimeError("no cgroup v2 tree is mounted (sock_ops programs attach to one): "
                       "mount -t cgroup2 none /sys/fs/cgroup/unified")


def _remove(path: Path) -> bool:
    """Kill what runs in the cgroup `path` and remove it; False if it would not go."""
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")  # Linux 5.14+: every process inside, at once
    for _ in range(int(REMOVE_SECONDS / 0.05)):
        try:
            path.rmdir()  # programs still attached are detached as the cgroup goes
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cleanup_stale() -> list[Path]:
    """Remove the cgroups of runs that are gone (a kill -9 leaves them, programs attached)."""
    removed = []
    with contextlib.suppress(RuntimeError):
        for path in v2_root().iterdir():
            match = NAME.match(path.name)
            if match and int(match[1]) == pid_namespace() and not pid_alive(int(match[2])) and _remove(path):
                removed.append(path)
    return removed


class ProgramCgroup:
    """A fresh cgroup v2 for one run: `argv()` starts a command inside it, `attach()` hangs a
    sock_ops program on it; leaving the block (or `close()`) undoes both and removes it."""

    def __init__(self) -> None:
        cleanup_stale()
        self.path = v2_root() / f"bpflab-sockops-{pid_namespace()}-{os.getpid()}-{next(_counter)}"
        self.path.mkdir()
        self._attached: list[tuple[int, int]] = []  # (program fd, cgroup fd)

    def argv(self, command: Sequence[str]) -> list[str]:
        """`command`, run from inside the cgroup: a shell joins it, then becomes the command. Put
        it before `ip netns exec`, which mounts a sysfs of its own where this cgroup is not."""
        join = f'echo $$ > {self.path / "cgroup.procs"} && exec "$@"'
        return ["sh", "-c", join, "sh", *command]

    def attach(self, program: Program) -> None:
        """Attach a loaded sock_ops program (hook "sock_ops") to this cgroup; `close()` detaches it."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            libbpf.prog_attach(program.fd, fd, BPF_CGROUP_SOCK_OPS)
        except OSError:
            os.close(fd)
            raise
        self._attached.append((program.fd, fd))

    def close(self) -> None:
        for prog_fd, fd in reversed(self._attached):
            with contextlib.suppress(OSError):  # the program may be closed already
                libbpf.prog_detach(prog_fd, fd, BPF_CGROUP_SOCK_OPS)
            os.close(fd)
        self._attached.clear()
        _remove(self.path)

    def __enter__(self) -> ProgramCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
