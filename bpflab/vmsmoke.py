"""`make vm-smoke`: the reference XDP echo, natively attached to a virtio NIC in a real guest.

Vagrant boxes cannot be downloaded where the course is tested, so this is what stands in for
`vagrant up`: a minimal Debian guest (debootstrap, cached; Debian 12 with Linux 6.1 by default, or
Debian 13 with Linux 6.12: `--suite trixie`) boots under QEMU with a
multi-queue virtio-net NIC on a multi_queue tap in a network namespace of its own. In the guest
the reference program (bpf/xdp_icmp_echo.c) is attached in driver mode, the kernel's own echo is
switched off, and the host pings the guest. It passes when every ping is answered, `ip -d link`
in the guest shows native `xdp` (not `xdpgeneric`), and the guest kernel never says it fell back
to "locked tx mode" (what virtio-net does with fewer queue pairs than XDP needs). In the same boot
the guest's verifier also checks every other program the course ships, loading without attaching
them: each lab's reference (as BPF_PROG_TYPE_XDP or, at the "tc" hook, BPF_PROG_TYPE_SCHED_CLS) and
the benchmark's XDP tools in bpf/tools; the run fails if it rejects any.

    netns vmsmoke-<pid>                            QEMU guest, 2 vCPUs, the suite's kernel
    tap vmsmoke<pid>, multi_queue        <====>    virtio-net-pci, 4 queue pairs (mq=on)
    198.51.100.1/24, 2001:db8:1::1/64              198.51.100.2/24, 2001:db8:1::2/64, XDP echo

How the programs get into the guest: they are BCC-flavoured C (`BPF_ARRAY`, `map.lookup()`)
that plain clang cannot build, and the guest has no BCC. So the host compiles each with the
course's own runtime (`programs.load`, BCC), takes the very instructions BCC made (`dump_func`)
and, from the host kernel, the type and sizes of each map the instructions load; the guest's
small loader (vmguest/xdp_loader.py, ctypes on libbpf) makes the same maps, writes their fds into
those instructions and loads them. The guest kernel's verifier checks them afresh: the bytecode
students' programs become, verified and run by the guest's own kernel. BCC takes about 4 s a program,
so the host compiles them in worker processes while the guest boots, and hands them over as one
line of JSON through a virtio-serial port (QEMU's end is a unix socket in the run's folder).

QEMU uses KVM where it works and TCG otherwise: nested KVM can hang after the boot loader or
make QEMU abort, so a KVM guest whose kernel prints nothing within KVM_PROBE_SECONDS is stopped
and booted again with TCG.
Everything a run makes is named after its pid (netns `vmsmoke-<pid>`), so the next run removes
what a killed one left; QEMU is always stopped by its pid, and dies with the run that started it.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import struct
import subprocess
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from pyroute2 import netns

from bpflab.labs import BPF_TOOLS, program_labs
from bpflab.processes import (
    die_with_parent,
    pid_alive,
    restore_sigterm,
    signals_held,
    sigterm_interrupts,
    stop_pid,
)
from bpflab.programs import BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, ProgramError, existing_netns
from bpflab.topology import NUD_PERMANENT, PingResult, run_in, sysctl

CACHE = Path("/var/cache/bpflab/vm-smoke")
GUEST_FILES = Path(__file__).resolve().parent / "vmguest"
LAB = "xdp-icmp"  # the lab whose reference is attached and pinged
# Checked by the guest's verifier besides the labs' references: the benchmark's XDP tools, as
# (file in bpf/tools, entry, cflags). 75 is the length of bench's query frame (www.lab.example, IPv4).
TOOLS = (("dns_query_generator.c", "dns_query_generator", ("-DQUERY_LEN=75",)),
         ("dns_reply_counter.c", "dns_reply_counter", ()))
PROG_TYPES = {"xdp": BPF_PROG_TYPE_XDP, "tc": BPF_PROG_TYPE_SCHED_CLS}
COMPILERS = 2  # worker processes running BCC while the guest boots
PORT = "bpflab.programs"  # the virtio-serial port that carries them to the guest
SUITES = {"bookworm": "Debian 12, Linux 6.1", "trixie": "Debian 13, Linux 6.12"}  # guest kernels
# What the guest needs: a kernel and an initrd that mounts the root disk, iproute2, and the
# loader's python3 and libbpf1. (minbase already has tar, mount and dmesg.)
PACKAGES = ("linux-image-amd64", "initramfs-tools", "kmod", "udev", "iproute2", "python3", "libbpf1")
# Only what mounts the root disk goes into the initrd: 5 MB instead of 34, and under TCG the guest
# reaches its init about 10 s sooner. virtio_net is loaded later, from the root disk.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4")
VCPUS = 2
QUEUES = 2 * VCPUS  # queue pairs: virtio-net gives XDP_TX its own queues when it has one per CPU spare
MEMORY_MB = 512
NETNS_NAME = re.compile(r"^vmsmoke-(\d+)$")
HOST_IPV4, GUEST_IPV4 = "198.51.100.1", "198.51.100.2"
HOST_IPV6, GUEST_IPV6 = "2001:db8:1::1", "2001:db8:1::2"
GUEST_MAC = "52:54:00:5a:00:02"
KERNEL_ARGS = "root=/dev/vda ro init=/smoke-init console=ttyS0 earlyprintk=ttyS0 panic=-1 fsck.mode=skip"
KVM_PROBE_SECONDS = 10  # a working KVM guest prints its first line within a second or two
READY_SECONDS = 240  # TCG on a loaded 2-core machine
PINGS = 10
COUNTER_SECONDS = 30  # the guest prints its counters every 0.3 s; TCG under load can be far slower
LOCKED_TX = "locked tx mode"
LD_IMM64, BPF_PSEUDO_MAP_FD = 0x18, 1
INSN = struct.Struct("<BBhi")  # struct bpf_insn


class SmokeError(Exception):
    """The smoke test could not get as far as its checks; the message says where it stopped."""


# -- the guest image ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuestImage:
    root: Path  # ext4 image of the debootstrapped tree, with the guest files in it
    kernel: Path
    initrd: Path


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:12]


def guest_files() -> dict[str, Path]:
    """Where each guest file goes in the image."""
    return {"smoke-init": GUEST_FILES / "smoke-init", "smoke/xdp_loader.py": GUEST_FILES / "xdp_loader.py"}


def image_keys(suite: str) -> tuple[str, str]:
    """(tree key, image key): the tree changes with the packages, the image also with the guest files."""
    tree = suite + "-" + _digest(suite.encode(), *(p.encode() for p in PACKAGES + INITRD_MODULES))
    files = [name.encode() + b"=" + path.read_bytes() for name, path in sorted(guest_files().items())]
    return tree, suite + "-" + _digest(tree.encode(), *files)


def guest_image(suite: str) -> tuple[GuestImage, bool]:
    """The suite's cached guest image, built first if the packages or guest files changed; (image, built)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tree_key, image_key = image_keys(suite)
    tree, root = CACHE / f"tree-{tree_key}", CACHE / f"root-{image_key}.ext4"
    built = False
    with open(CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it once
        if not tree.is_dir():
            debootstrap(tree, suite)
            built = True
        if not root.is_file():
            make_ext4(tree, root)
            built = True
        for old in [*CACHE.glob(f"tree-{suite}-*"), *CACHE.glob(f"root-{suite}-*")]:
            if old in (tree, root):
                continue
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink()
    return GuestImage(root, _one(tree, "boot/vmlinuz-*"), _one(tree, "boot/initrd.img-*")), built


def _one(tree: Path, pattern: str) -> Path:
    found = sorted(tree.glob(pattern))
    if not found:
        raise SmokeError(f"the guest tree {tree} has no {pattern}")
    return found[-1]


def debootstrap(tree: Path, suite: str) -> None:
    """A minbase Debian tree with PACKAGES and a small initrd, built aside and renamed when complete."""
    start = time.monotonic()
    partial = tree.with_name(tree.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(partial)]
    _build_step(argv, partial)
    (partial / "etc/initramfs-tools/conf.d/vmsmoke.conf").write_text("MODULES=list\n")
    (partial / "etc/initramfs-tools/modules").write_text("\n".join(INITRD_MODULES) + "\n")
    _build_step(["chroot", str(partial), "update-initramfs", "-u", "-k", "all"], partial)
    partial.rename(tree)
    say(f"debootstrap of {suite} with {len(PACKAGES)} packages took {time.monotonic() - start:.1f} s")


def _build_step(argv: list[str], partial: Path) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise SmokeError(f"{argv[0]} failed:\n{(done.stdout + done.stderr)[-2000:]}")


def make_ext4(tree: Path, root: Path) -> None:
    """The root disk: the tree plus the guest files, as an ext4 image (mkfs.ext4 -d)."""
    start = time.monotonic()
    for name, path in guest_files().items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, tree / name)
    used = int(subprocess.run(["du", "-sb", str(tree)], capture_output=True, text=True, check=True)
               .stdout.split()[0])
    size_mb = used * 5 // 4 // 2**20 + 64
    partial = root.with_name(root.name + ".partial")
    partial.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "vmsmoke", "-d", str(tree), str(partial), f"{size_mb}M"],
                   check=True, capture_output=True)
    partial.rename(root)
    say(f"root disk of {size_mb} MiB made in {time.monotonic() - start:.1f} s")


# -- the programs, as BCC built them ---------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A program for the guest's verifier; `attach` marks the echo that is attached and pinged."""

    source: Path
    entry: str
    hook: str
    cflags: tuple[str, ...] = ()
    attach: bool = False


def targets() -> list[Target]:
    """Every lab's reference, in course order, then the benchmark's XDP tools."""
    labs = [Target(lab.reference, entry, lab.hook, attach=lab.id == LAB)
            for lab in program_labs() for entry in lab.entries]  # a gym: each exercise
    return labs + [Target(BPF_TOOLS / name, entry, "xdp", cflags) for name, entry, cflags in TOOLS]


class MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (uapi/linux/bpf.h); the kernel fills as much as is asked."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16)]


def map_info(fd: int) -> MapInfo:
    libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
    info, size = MapInfo(), ctypes.c_uint32(ctypes.sizeof(MapInfo))
    if libbpf.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        raise SmokeError(f"cannot read the map of fd {fd}")
    return info


def describe_maps(insns: bytes) -> list[dict]:
    """Each map the instructions load (ld_imm64 of a map fd): its kind and sizes, and where it is used."""
    users: dict[int, list[int]] = {}
    for index in range(len(insns) // INSN.size):
        code, regs, _, imm = INSN.unpack_from(insns, index * INSN.size)
        if code == LD_IMM64 and regs >> 4 == BPF_PSEUDO_MAP_FD:
            users.setdefault(imm, []).append(index)
    maps = []
    for fd, where in users.items():
        info = map_info(fd)
        if info.map_flags:
            raise SmokeError(f"map {info.name.decode()} has flags {info.map_flags:#x}: not supported here")
        maps.append({"name": info.name.decode(), "type": info.type, "key_size": info.key_size,
                     "value_size": info.value_size, "max_entries": info.max_entries, "insns": where})
    return maps


def describe(target: Target) -> dict:
    """A program as BCC compiles it: instructions, maps, and for the echo the guest's `server` value.

    Runs in a worker process: what it raises must pickle, so the host's refusal is a SmokeError.
    """
    from bpflab.echo import configure  # scapy and BCC load only when a run needs them
    from bpflab.programs import load

    try:
        program = load(target.source, target.entry, target.hook, target.cflags)
    except ProgramError as err:
        raise SmokeError(f"the host could not load {target.source.name}: {err.explain()}") from None
    try:
        insns = program.bpf.dump_func(target.entry.encode())
        description = {"name": target.entry, "prog_type": PROG_TYPES[target.hook], "license": "GPL",
                       "insns": base64.b64encode(insns).decode(), "maps": describe_maps(insns),
                       "attach": target.attach}
        if target.attach:
            configure(program, GUEST_IPV4, GUEST_IPV6, GUEST_MAC)  # the runtime's own packing
            description["server"] = bytes(program.table("server")[ctypes.c_int(0)]).hex()
    finally:
        program.close()
    return description


def run_disk(path: Path) -> None:
    """This run's settings for the guest, as a tar archive it reads from its second disk."""
    env = f"GUEST_MAC={GUEST_MAC}\nGUEST_IPV4={GUEST_IPV4}\nGUEST_IPV6={GUEST_IPV6}\n".encode()
    with tarfile.open(path, "w") as tar:
        member = tarfile.TarInfo("guest.env")
        member.size = len(env)
        tar.addfile(member, BytesIO(env))


# -- host side: netns, tap, QEMU ------------------------------------------------------------------
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


# -- the checks ------------------------------------------------------------------------------------
def guest_lines(console: str, tag: str) -> list[str]:
    return re.findall(rf"^VMSMOKE {tag}: (.*?)\r?$", console, re.MULTILINE)


def reply_counts(console: str) -> tuple[int, int]:
    found = re.findall(r"^VMSMOKE replies ipv4 (\d+) ipv6 (\d+)", console, re.MULTILINE)
    return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)


def ping(run: Run, ipv6: bool) -> PingResult:
    target = GUEST_IPV6 if ipv6 else GUEST_IPV4
    argv = ["ping", "-6" if ipv6 else "-4", "-n", "-q", "-c", str(PINGS), "-i", "0.2", "-W", "2", target]
    return PingResult.parse(run_in(run.netns, argv, timeout=PINGS * 3 + 10).stdout, PINGS)


def check(console: str, pings: dict[str, PingResult], programs: list[str]) -> list[str]:
    """Why the run failed, in plain words; empty when it passed."""
    problems = []
    for name in programs:
        said = guest_lines(console, f"verifier {name}")
        if not any(line.startswith("accepted") for line in said):
            log = "".join(f"\n    {line[2:]}" for line in said if line.startswith("| "))
            problems.append(f"the guest's verifier did not accept {name}{log}")
    for family, result in pings.items():
        if result.received != result.sent:
            problems.append(f"{family}: {result.received} of {result.sent} pings answered")
    v4, v6 = reply_counts(console)
    if v4 < pings["IPv4"].received or v6 < pings["IPv6"].received:
        problems.append(f"the XDP program counted {v4} IPv4 and {v6} IPv6 replies: fewer than ping saw")
    if not re.search(r"^VMSMOKE kernel echo off: ipv4 1 ipv6 1", console, re.MULTILINE):
        problems.append("the guest kernel's own echo was not switched off")
    link = guest_lines(console, "link")
    native = link and re.search(r"\bxdp\b", link[0]) and any(line.startswith("prog/xdp") for line in link)
    if not native:
        problems.append(f"`ip -d link` does not show native xdp: {link[:1]}")
    if any("xdpgeneric" in line for line in link):
        problems.append("the program runs in generic mode (xdpgeneric)")
    locked = [line for line in console.splitlines() if LOCKED_TX in line]
    if locked:
        problems.append(f"the guest kernel fell back to locked tx mode: {locked[0].strip()}")
    return problems


# -- the run --------------------------------------------------------------------------------------
def say(text: str) -> None:
    print(f"vm-smoke: {text}", flush=True)


def smoke(run: Run, accel: str, times: dict[str, float], compilers: ProcessPoolExecutor,
          suite: str) -> list[str]:
    """Compile the programs while the guest boots, hand them over, ping; return the problems found."""
    start = time.monotonic()
    programs = targets()
    compiling = [compilers.submit(describe, target) for target in programs]
    image, built = guest_image(suite)
    times["image build" if built else "image (cached)"] = time.monotonic() - start
    say(f"image {image.root.name} ({'built' if built else 'cached'}), kernel {image.kernel.name}")

    run.folder.mkdir(parents=True, exist_ok=True)
    run_disk(run.folder / "run.tar")
    with signals_held():
        make_netns(run.netns, run.tap)
    guest = boot(run, image, run.folder / "run.tar", accel, times)
    descriptions = [future.result() for future in compiling]
    times["programs (while booting)"] = time.monotonic() - start
    for description in descriptions:
        maps = ", ".join(m["name"] for m in description["maps"])
        say(f"{description['name']} compiled by BCC on the host: "
            f"{len(base64.b64decode(description['insns'])) // INSN.size} instructions, maps {maps}")
    guest.send(descriptions)
    ready = guest.wait_for(r"^VMSMOKE (ready|failed)", READY_SECONDS)
    times[f"boot ({guest.accel})"] = time.monotonic() - guest.started
    console = guest.console()
    for line in console.splitlines():
        if line.startswith("VMSMOKE") and "replies" not in line:
            print(f"  guest: {line[8:].rstrip()}")
    if not ready or ready.group(1) != "ready":
        tail = "\n".join(console.splitlines()[-15:])
        raise SmokeError(f"the guest did not get ready ({guest.accel}); its console ended with:\n{tail}")

    start = time.monotonic()
    pings = {"IPv4": ping(run, ipv6=False), "IPv6": ping(run, ipv6=True)}
    expected = pings["IPv4"].received, pings["IPv6"].received
    guest.wait_for(rf"^VMSMOKE replies ipv4 {expected[0]} ipv6 {expected[1]}", COUNTER_SECONDS)
    times["test"] = time.monotonic() - start
    for family, result in pings.items():
        rtt = re.search(r"rtt .*", result.output)
        say(f"ping {family}: {result.received}/{result.sent} answered" + (f", {rtt.group(0)}" if rtt else ""))
    v4, v6 = reply_counts(guest.console())
    say(f"the XDP program in the guest counted {v4} IPv4 and {v6} IPv6 replies")
    return check(guest.console(), pings, [target.entry for target in programs])


def main(accel: str = "auto", suite: str = "bookworm") -> int:
    """Run the smoke test; print times and PASS or FAIL with reasons; 0 on PASS, 1 otherwise."""
    old_sigterm = sigterm_interrupts()
    started, times = time.monotonic(), {}
    run = Run()
    # Forked (before any thread, at the first submit): "spawn" would also start multiprocessing's
    # resource tracker, which outlives a killed run and keeps its output open.
    compilers = ProcessPoolExecutor(COMPILERS, mp_context=multiprocessing.get_context("fork"),
                                    initializer=die_with_parent)  # a killed run leaves no compiler
    try:
        removed = cleanup_stale()
        if removed:
            say(f"removed what killed runs left: {' '.join(removed)}")
        problems = smoke(run, accel, times, compilers, suite)
    except SmokeError as err:
        problems = [str(err)]
    except KeyboardInterrupt:
        problems = ["interrupted"]
    finally:
        compilers.shutdown(wait=False, cancel_futures=True)
        with signals_held():
            run.close()
        restore_sigterm(old_sigterm)
    total = time.monotonic() - started
    say("times: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in times.items())
        + f"; total {total:.1f} s")
    if problems:
        print("FAIL: " + "\n  ".join(problems), flush=True)
        return 1
    print(f"PASS ({SUITES[suite]}): native XDP on a {QUEUES}-queue virtio NIC answered every ping, "
          f"no locked tx mode; the guest's verifier accepted all {len(targets())} programs", flush=True)
    return 0
