"""`make box`: the course's Vagrant box for libvirt, Debian 12 with the playbook already applied.

Why: a student's first `vagrant up` from Debian's plain box runs the whole playbook inside the VM,
and under QEMU's emulation (no KVM) that took 27 min here, most of it apt and pip. The course box
carries what the playbook installs (packages, the box kernel's headers, the venv at /vagrant/.venv),
so `vagrant up` boots it and re-runs the playbook to find nothing to change.

How: a Debian 12 root made by debootstrap (cached), a fresh copy of it per build, the playbook run
inside it exactly as `make lab` runs it on a host (bpflab/tools/toolchain.py's chroot, which gives
the build the host's CA bundle and proxies at build time only, never written into the root),
told the box kernel's release, not this host's. Then the root becomes a machine: the `vagrant`
user with Vagrant's well-known key (Vagrant swaps it for a key of its own on first boot), SSH host
keys made at first boot, an empty machine-id, DHCP on eth0. Its ext4 file system is written
from the tree (mkfs.ext4 -d, at the first partition's offset of an MBR disk, since this kernel's
`losetup -P` shows no partitions), then mounted by offset to install extlinux, whose menu boots
/vmlinuz: the symlink Debian moves with every kernel update. qcow2 + metadata.json + Vagrantfile,
tarred, is the box.

    dist/vagrant/bpflab-course-libvirt.box   the box: `vagrant box add --name bpflab/course` it
    dist/vagrant/bpflab-course-libvirt.json  when and from which playbook inputs it was built
    /var/cache/bpflab/box/                   the debootstrapped base, the build's root, its log
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bpflab.course.labs import ROOT
from bpflab.tools.toolchain import ToolchainError, copy_course, debootstrap, run_inside

CACHE = Path("/var/cache/bpflab/box")
OUTPUT = ROOT / "dist" / "vagrant" / "bpflab-course-libvirt.box"
BOX_NAME = "bpflab/course"  # the name the Vagrantfile looks for
SUITE = "bookworm"
# A bootable Debian that Vagrant can drive: a kernel, systemd, SSH, sudo, ifupdown for the NICs
# Vagrant configures (its Debian guest plugin writes /etc/network/interfaces), rsync for the
# synced folder, dbus for hostnamectl, ansible-core for ansible_local (else it installs one).
# python3-cffi-backend: debootstrap does not resolve it for python3-cryptography (ansible's).
PACKAGES = ("linux-image-amd64", "systemd-sysv", "dbus", "openssh-server", "sudo", "ifupdown",
            "isc-dhcp-client", "netbase", "iproute2", "rsync", "ansible-core", "python3",
            "python3-cffi-backend", "ca-certificates", "make")
PROJECT = "/vagrant"  # the Vagrantfile's synced folder; the venv the playbook makes is under it
DISK_GB = 20  # the VM's disk as the guest sees it; qcow2 holds only what is written
PART_OFFSET = 1 << 20  # the first partition starts at 1 MiB, as fdisk's default
LABEL = "bpflab-root"
MAX_AGE = 20 * 3600  # apt refreshes package lists older than a day (the playbook's cache_valid_time)
INSECURE_KEY = Path("/usr/share/rubygems-integration/all/gems")  # where Debian's vagrant keeps keys/
# What the build leaves that no VM should get: the build's DNS resolver, its no-services policy,
# downloaded packages and caches, the machine identity and SSH host keys made during the build.
BUILD_LEFTOVERS = ("srv/results", "usr/sbin/policy-rc.d", "etc/resolv.conf", "var/lib/dbus/machine-id",
                   "var/cache/apt/archives/*.deb", "root/.cache", "root/.ansible", "tmp/*",
                   "etc/ssh/ssh_host_*")
SOURCES = """deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main
"""
EXTLINUX = f"""DEFAULT debian
TIMEOUT 10
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL={LABEL} ro net.ifnames=0 console=tty0 console=ttyS0,115200
"""
# SSH host keys are made on the VM's first boot, not in the box that every student shares.
HOSTKEYS_UNIT = """[Unit]
Description=Make the SSH host keys on first boot (bpflab box)
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
"""
INTERFACES = """auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""
# Inside the box, from the box's own Vagrantfile: what vagrant-libvirt needs to know of its disk.
BOX_VAGRANTFILE = """Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
"""


def say(text: str) -> None:
    print(f"box: {text}", flush=True)


def sh(*argv: str | Path) -> str:
    """Run a host command; its output, or a ToolchainError saying what failed."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ToolchainError(f"{' '.join(map(str, argv))} failed:\n{(done.stdout + done.stderr)[-1500:]}")
    return done.stdout


def base_root() -> Path:
    """The debootstrapped base, cached under a name that changes with the package list."""
    key = hashlib.sha256("\0".join(PACKAGES).encode()).hexdigest()[:12]
    base = CACHE / f"base-{SUITE}-{key}"
    if not base.is_dir():
        say(f"debootstrap {SUITE} with {len(PACKAGES)} packages ...")
        say(f"debootstrap took {debootstrap(base, SUITE, PACKAGES):.0f} s")
    return base


def kernel_release(root: Path) -> str:
    """The release of the root's kernel: the one its /vmlinuz names (a relative link into boot/)."""
    return Path(os.readlink(root / "vmlinuz")).name.removeprefix("vmlinuz-")


def provision(root: Path, log: Path) -> float:
    """The course's playbook inside the root, as the Vagrantfile runs it in the VM; its duration."""
    start = time.monotonic()
    copy_course(root, PROJECT)
    variables = (f"-e project_dir={PROJECT} -e install_dev_tools=false "
                 f"-e ansible_kernel={kernel_release(root)}")  # the box's kernel, not this host's
    status = run_inside(root, f"make provision PLAYBOOK_VARS='{variables}'", log, 3600, course=PROJECT)
    if status != 0:
        raise ToolchainError(f"the playbook failed in the box's root (exit {status}); see {log}")
    return time.monotonic() - start


def make_machine(root: Path) -> None:
    """Turn the provisioned root into a machine Vagrant can boot and log into, and strip the build."""
    # The checkout was the playbook's input; the VM gets the student's own by rsync. The venv stays.
    for item in (root / PROJECT.lstrip("/")).iterdir():
        if item.name != ".venv":
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    for pattern in BUILD_LEFTOVERS:
        for path in root.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (root / "etc/machine-id").write_text("")  # systemd makes one per VM at first boot
    (root / "etc/hostname").write_text("bpflab\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tbpflab\n")
    (root / "etc/fstab").write_text(f"LABEL={LABEL}\t/\text4\terrors=remount-ro\t0\t1\n")
    (root / "etc/apt/sources.list").write_text(SOURCES)
    (root / "etc/network/interfaces").write_text(INTERFACES)
    unit = root / "etc/systemd/system/ssh-hostkeys.service"
    unit.write_text(HOSTKEYS_UNIT)
    wants = root / "etc/systemd/system/ssh.service.requires"
    wants.mkdir(exist_ok=True)
    (wants / unit.name).unlink(missing_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    (root / "boot/extlinux").mkdir(exist_ok=True)
    (root / "boot/extlinux/extlinux.conf").write_text(EXTLINUX)
    add_vagrant_user(root)


def add_vagrant_user(root: Path) -> None:
    """Vagrant's conventions: user `vagrant` (password vagrant), sudo without a password, its public key."""
    key = next(INSECURE_KEY.glob("vagrant-*/keys/vagrant.pub"), None)
    if key is None:
        raise ToolchainError(f"Vagrant's public key is not under {INSECURE_KEY} (is vagrant installed?)")
    if subprocess.run(["chroot", root, "id", "vagrant"], capture_output=True).returncode != 0:
        sh("chroot", root, "useradd", "--create-home", "--shell", "/bin/bash", "vagrant")
    subprocess.run(["chroot", root, "chpasswd"], input="vagrant:vagrant\n", text=True, check=True)
    sudoers = root / "etc/sudoers.d/vagrant"
    sudoers.write_text("vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n")
    sudoers.chmod(0o440)
    ssh = root / "home/vagrant/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(key.read_text())
    (ssh / "authorized_keys").chmod(0o600)
    sh("chroot", root, "chown", "-R", "vagrant:vagrant", "/home/vagrant")


def make_disk(root: Path, raw: Path) -> None:
    """An MBR disk of DISK_GB with one bootable ext4 partition holding the root, and extlinux on it."""
    raw.unlink(missing_ok=True)
    with open(raw, "wb") as disk:
        disk.truncate(DISK_GB << 30)
    table = f"label: dos\nstart={PART_OFFSET // 512}, type=83, bootable\n"
    subprocess.run(["sfdisk", "--quiet", raw], input=table, text=True, check=True, capture_output=True)
    size_k = ((DISK_GB << 30) - PART_OFFSET) >> 10
    # No 64bit feature: extlinux 6.04 reads ext4 without it (20 GB needs none of it).
    sh("mkfs.ext4", "-q", "-F", "-L", LABEL, "-O", "^64bit", "-E", f"offset={PART_OFFSET}", "-d", root,
       raw, f"{size_k}k")
    # Mounted in a mount namespace of extlinux's own: the mount (and its loop device) ends with it.
    with tempfile.TemporaryDirectory(prefix="bpflab-box-") as mnt:
        sh("unshare", "--mount", "--propagation", "private", "sh", "-ec",
           f'mount -o loop,offset={PART_OFFSET} "$0" "$1"; extlinux --install "$1/boot/extlinux"', raw, mnt)
    mbr = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()
    with open(raw, "r+b") as disk:
        disk.write(mbr[:440])  # the boot code only: the partition table after it stays


def package_box(raw: Path, output: Path) -> None:
    """qcow2 + metadata.json + Vagrantfile in a gzipped tar: what `vagrant box add` takes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bpflab-box-", dir=CACHE) as tmp:
        staging = Path(tmp)
        sh("qemu-img", "convert", "-O", "qcow2", raw, staging / "box.img")
        (staging / "metadata.json").write_text(json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GB}) + "\n")
        (staging / "Vagrantfile").write_text(BOX_VAGRANTFILE)
        partial = output.with_name(output.name + ".partial")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            for name in ("metadata.json", "Vagrantfile", "box.img"):
                tar.add(staging / name, arcname=name)
        partial.rename(output)


def playbook_digest(kernel: str) -> str:
    """provisioning/stamp.py's digest of the playbook's inputs, for `kernel`: what the box's stamp holds."""
    spec = importlib.util.spec_from_file_location("stamp", ROOT / "provisioning" / "stamp.py")
    stamp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stamp)
    return stamp.digest(kernel)


def description(output: Path) -> Path:
    return output.with_suffix(".json")


def is_current(output: Path, max_age: float = MAX_AGE) -> bool:
    """Was the box at `output` built from today's playbook inputs, less than `max_age` seconds ago?

    A VM with no network (`make vm-vagrant`'s) can only re-run the playbook without changes when
    both hold: other inputs make it install, and day-old package lists make apt fetch new ones.
    """
    try:
        built = json.loads(description(output).read_text())
    except (OSError, ValueError):
        return False
    return (output.is_file() and time.time() - built["built"] < max_age
            and built["digest"] == playbook_digest(built["kernel"]))


def build(output: Path = OUTPUT) -> dict[str, float]:
    """Build the box at `output`; the seconds each step took."""
    times: dict[str, float] = {}
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / "build.log"
    log.write_text("")
    start = time.monotonic()
    base = base_root()
    times["base root"] = time.monotonic() - start

    start = time.monotonic()
    root = CACHE / "root"
    shutil.rmtree(root, ignore_errors=True)
    sh("cp", "-a", base, root)
    times["copy"] = time.monotonic() - start
    say(f"the playbook, inside the root (kernel {kernel_release(root)}; its output: {log}) ...")
    times["playbook"] = provision(root, log)
    say(f"provisioned in {times['playbook']:.0f} s")

    kernel = kernel_release(root)
    start = time.monotonic()
    make_machine(root)
    raw = CACHE / "disk.raw"
    make_disk(root, raw)
    times["disk"] = time.monotonic() - start
    start = time.monotonic()
    package_box(raw, output)
    raw.unlink()
    shutil.rmtree(root)
    times["package"] = time.monotonic() - start
    description(output).write_text(json.dumps(
        {"built": time.time(), "kernel": kernel, "digest": playbook_digest(kernel), "seconds": times}) + "\n")
    say(f"{output} ({output.stat().st_size / 2**20:.0f} MiB): "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items()))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpflab box", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"the box file (default: {OUTPUT})")
    args = parser.parse_args(argv)
    try:
        build(args.output)
    except ToolchainError as err:
        print(f"FAIL: {err}", flush=True)
        return 1
    print(f"PASS: add it with: vagrant box add --force --name {BOX_NAME} {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
