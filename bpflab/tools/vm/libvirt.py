"""libvirt for the course's Vagrant check, in a network namespace of its own (issue 19).

Vagrant's libvirt provider needs a libvirt daemon, and its VMs need libvirt's networks: a
bridge, dnsmasq, NAT rules. `NetnsLibvirt` starts virtlogd and libvirtd inside a namespace the
run creates, so that every bridge, address and packet of those networks lives there and the
host's networks are never touched (a command that must reach the VMs, `vagrant` itself, runs
in the namespace too: `run`). No systemd: both daemons are children of this process, die with
it, and are stopped by their pids; what libvirt started in the namespace (dnsmasq) is stopped by
the pids the namespace holds. A run killed before it could clean up leaves its namespace
behind, and the next run clears it first.

The playbook's dev tools install libvirt without systemd and set QEMU to run as root (see
provisioning/tasks/dev_tools.yml).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bpflab.processes import die_with_parent, stop, stop_pid

NETNS = "bpflab-libvirt"
URI = "qemu:///system"
SOCKET = Path("/run/libvirt/libvirt-sock")  # libvirtd's, wherever it runs: one per machine
READY_TIMEOUT = 30.0  # seconds for libvirtd to answer
STATE_DIRS = ("/var/log/libvirt", "/var/lib/libvirt/images", "/var/lib/libvirt/qemu",
              "/var/lib/libvirt/dnsmasq")  # what libvirt's packaging would make, without systemd


class LibvirtError(RuntimeError):
    """libvirt could not be started, or refused a command: the message says which and why."""


def netns_pids(name: str) -> list[int]:
    """The processes inside netns `name` (none if it does not exist)."""
    listed = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    return [int(pid) for pid in listed.stdout.split()]


def netns_exists(name: str) -> bool:
    return name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                  check=False).stdout.split()


def clear_netns(name: str) -> None:
    """Stop every process in netns `name` by its pid, then delete the namespace (its bridges go
    with it)."""
    for pid in netns_pids(name):
        stop_pid(pid)
    if netns_exists(name):
        subprocess.run(["ip", "netns", "delete", name], check=True)


class NetnsLibvirt:
    """virtlogd and libvirtd in netns NETNS, for the body of a `with`; everything undone on exit."""

    def __init__(self) -> None:
        self.daemons: list[subprocess.Popen] = []

    def __enter__(self) -> NetnsLibvirt:
        clear_netns(NETNS)  # a killed run's
        if SOCKET.exists() and self.virsh("version", check=False).returncode == 0:
            raise LibvirtError(f"a libvirtd of this machine already answers on {SOCKET}: stop it first "
                               "(the check runs its own, inside a namespace)")
        for folder in STATE_DIRS:
            Path(folder).mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
        try:
            subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
            for daemon in ("virtlogd", "libvirtd"):
                self.daemons.append(subprocess.Popen(
                    ["ip", "netns", "exec", NETNS, daemon], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent))
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for daemon in self.daemons:
                if daemon.poll() is not None:
                    said = daemon.stderr.read().decode(errors="replace").strip().splitlines()
                    raise LibvirtError(f"{daemon.args[-1]} exited with {daemon.returncode}: "
                                       f"{said[-1] if said else 'no message'}")
            if self.virsh("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise LibvirtError(f"libvirtd did not answer within {READY_TIMEOUT:.0f} s")

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`virsh -c qemu:///system ARGS` (through libvirtd's socket: from any namespace)."""
        done = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=60,
                              check=False)
        if check and done.returncode != 0:
            raise LibvirtError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
        return done

    def run(self, argv: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (vagrant, ping: what must reach the VMs)."""
        return subprocess.run(["ip", "netns", "exec", NETNS, *argv], capture_output=True, text=True,
                              timeout=timeout, check=False, **kwargs)

    def close(self) -> None:
        """Every domain and network destroyed and undefined, the daemons stopped, the namespace
        and all left in it (dnsmasq) gone."""
        if self.daemons and self.daemons[-1].poll() is None:
            for name in self.virsh("list", "--all", "--name", check=False).stdout.split():
                self.virsh("destroy", name, check=False)
                self.virsh("undefine", name, "--nvram", "--remove-all-storage", check=False)
            for name in self.virsh("net-list", "--all", "--name", check=False).stdout.split():
                self.virsh("net-destroy", name, check=False)
                self.virsh("net-undefine", name, check=False)
        for daemon in reversed(self.daemons):
            stop(daemon)
            daemon.stderr.close()
        self.daemons.clear()
        clear_netns(NETNS)
