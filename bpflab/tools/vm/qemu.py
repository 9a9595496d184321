"""The host side of the VM smoke test: its netns and tap, and QEMU from start to stop.

The guest gets a multi-queue virtio-net NIC on a multi_queue tap in a network namespace of its
own, with static neighbours on the host's end. QEMU uses KVM where it works and TCG otherwise:
nested KVM can hang after the boot loader or make QEMU abort, so a KVM guest whose kernel prints
nothing within KVM_PROBE_SECONDS is stopped and booted again with TCG. Everything a run makes is
named after its pid (netns `vmsmoke-<pid>`), so the next run removes what a killed one left
(`cleanup_stale`); QEMU is always stopped by its pid, and dies with the run that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import netns

from bpflab.attach import existing_netns
from bpflab.processes import die_with_parent, pid_alive, stop_pid
from bpflab.tools.vm.common import CACHE, GUEST_IPV4, GUEST_IPV6, GUEST_MAC, SmokeError, say
from bpflab.tools.vm.image import GuestImage
from bpflab.topology import NUD_PERMANENT, sysctl

PORT = "bpflab.programs"  # the virtio-serial port that carries them to the guest
VCPUS = 2
QUEUES = 2 * VCPUS  # queue pairs: virtio-net gives XDP_TX its own queues when it has one per CPU spare
MEMORY_MB = 512
NETNS_NAME = re.compile(r"^vmsmoke-(\d+)$")
HOST_IPV4, HOST_IPV6 = "198.51.100.1", "2001:db8:1::1"
KERNEL_ARGS = "root=/dev/vda ro init=/smoke-init console=ttyS0 earlyprintk=ttyS0 panic=-1 fsck.mode=skip"
KVM_PROBE_SECONDS = 10  # a working KVM guest prints its first line within a second or two


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is netns `name` (what `ip netns pids` finds)."""
    target = os.stat(f"/run/netns/{name}")
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                ns = os.stat(proc / "ns" / "net")
                if (ns.st_ino, ns.st_dev) == (target.st_ino, target.st_dev):
                    pids.append(int(proc.name))
    return pids


def cleanup_stale() -> list[str]:
    """Remove what killed runs left: their QEMU (by pid, found in their netns), netns and run folder."""
    removed = []
    for name in netns.listnetns():
        match = NETNS_NAME.match(name)
        if match and not pid_alive(int(match.group(1))):
            for pid in netns_pids(name):
                stop_pid(pid, grace=1)
            netns.remove(name)
            removed.append(name)
    for folder in CACHE.glob("run-*"):
        if not pid_alive(int(folder.name.split("-")[1])):
            shutil.rmtree(folder, ignore_errors=True)
    return removed


def make_netns(name: str, tap: str) -> None:
    """The test's netns with a persistent multi_queue tap for QEMU, addressed, with static neighbours."""
    netns.create(name)
    with existing_netns(name) as ns:
        ns.link("add", ifname=tap, kind="tuntap", mode="tap", ifr={"multi_queue": True, "no_pi": True})
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        index = ns.link_lookup(ifname=tap)[0]
        sysctl(name, f"net.ipv6.conf.{tap}.router_solicitations", 0)
        ns.addr("add", index=index, address=HOST_IPV4, prefixlen=24)
        ns.addr("add", index=index, address=HOST_IPV6, prefixlen=64, flags=0x02)  # nodad
        ns.link("set", index=index, state="up")
        for address in (GUEST_IPV4, GUEST_IPV6):
            ns.neigh("replace", dst=address, lladdr=GUEST_MAC, ifindex=index, state=NUD_PERMANENT)


def qemu_argv(accel: str, image: GuestImage, disk: Path, serial: Path, port: Path, tap: str) -> list[str]:
    return [
        "qemu-system-x86_64", "-name", tap, "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(VCPUS), "-m", str(MEMORY_MB), "-nodefaults", "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", KERNEL_ARGS,
        "-drive", f"file={image.root},format=raw,if=virtio,readonly=on",
        "-drive", f"file={disk},format=raw,if=virtio,readonly=on",
        "-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no,queues={QUEUES},vhost=off",
        "-device", f"virtio-net-pci,netdev=net0,mq=on,vectors={2 * QUEUES + 2},mac={GUEST_MAC}",
        "-serial", f"file:{serial}",
        "-device", "virtio-serial-pci", "-chardev", f"socket,id=programs,path={port},server=on,wait=off",
        "-device", f"virtserialport,chardev=programs,name={PORT}",
    ]


@dataclass
class Guest:
    """A running QEMU and its serial console log."""

    process: subprocess.Popen
    serial: Path
    log: Path  # what QEMU itself printed
    port: Path  # QEMU's end of the guest's virtio-serial port PORT
    accel: str
    started: float = field(default_factory=time.monotonic)
    channel: socket.socket | None = None  # connected to `port`, open while the guest runs

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def wait_for(self, pattern: str, seconds: float) -> re.Match | None:
        """The first match of `pattern` on the console within `seconds`; None if QEMU exits first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = re.search(pattern, self.console(), re.MULTILINE)
            if found or self.process.poll() is not None:
                return found
            time.sleep(0.2)
        return None

    def send(self, descriptions: list[dict], seconds: float = 10) -> None:
        """Hand the programs to the guest's loader: one line of JSON into its port.

        QEMU makes the socket as it starts, and reads from it only once the loader opens the
        port, so the line waits in the socket until then.
        """
        deadline = time.monotonic() + seconds
        while not self.port.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SmokeError(f"QEMU never made the socket of the guest's port ({self.port.name})")
            time.sleep(0.1)
        self.channel = socket.socket(socket.AF_UNIX)
        self.channel.settimeout(seconds)
        self.channel.connect(str(self.port))
        self.channel.sendall(json.dumps(descriptions).encode() + b"\n")

    def stop(self) -> None:
        stop_pid(self.process.pid)
        self.process.wait()
        if self.channel is not None:
            self.channel.close()


def start_guest(run: Run, accel: str, image: GuestImage, disk: Path) -> Guest:
    serial, log = run.folder / f"serial-{accel}.log", run.folder / f"qemu-{accel}.log"
    port = run.folder / f"programs-{accel}.sock"
    with open(log, "w") as out:
        argv = ["ip", "netns", "exec", run.netns, *qemu_argv(accel, image, disk, serial, port, run.tap)]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=die_with_parent)  # `ip netns exec` execs QEMU: same pid
    return Guest(process, serial, log, port, accel)


def boot(run: Run, image: GuestImage, disk: Path, accel: str, times: dict[str, float]) -> Guest:
    """Boot with KVM unless told otherwise, if its guest kernel starts quickly; else with TCG."""
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
    if accel == "kvm" and not kvm:
        raise SmokeError("KVM was asked for, and /dev/kvm cannot be used")
    if accel != "tcg" and kvm:
        guest = start_guest(run, "kvm", image, disk)
        run.guest = guest
        if guest.wait_for(r"Linux version", KVM_PROBE_SECONDS):
            return guest
        exited = guest.process.poll() is not None
        guest.stop()
        times["KVM probe"] = time.monotonic() - guest.started
        last = (guest.log.read_text(errors="replace").strip().splitlines() or ["nothing"])[-1]
        why = (f"QEMU stopped at once ({last})" if exited else
               f"the guest kernel printed nothing in {KVM_PROBE_SECONDS} s (nested KVM can hang)")
        say(f"KVM: {why}; booting again with TCG")
        if accel == "kvm":
            raise SmokeError("KVM was asked for and did not work")
    guest = start_guest(run, "tcg", image, disk)
    run.guest = guest
    return guest


@dataclass
class Run:
    """One smoke run: its names, folder and what it has started; `close` removes it all."""

    netns: str = field(default_factory=lambda: f"vmsmoke-{os.getpid()}")
    tap: str = field(default_factory=lambda: f"vmsmoke{os.getpid()}")
    folder: Path = field(default_factory=lambda: CACHE / f"run-{os.getpid()}")
    guest: Guest | None = None

    def close(self) -> None:
        """Stop QEMU by its pid, then anything else in the netns, then remove the netns."""
        if self.guest is not None:
            self.guest.stop()
            if self.guest.serial.exists():  # kept for a look after a failure
                shutil.copy2(self.guest.serial, CACHE / "last-serial.log")
        if self.netns in netns.listnetns():
            for pid in netns_pids(self.netns):
                stop_pid(pid)
            netns.remove(self.netns)
        shutil.rmtree(self.folder, ignore_errors=True)
