"""The guest's disks: the cached Debian image it boots from, and this run's settings beside it.

Building the image takes minutes (debootstrap, then an initrd), so it is built once per suite and
kept in the cache under a key made of what went into it: the tree's key changes with the
packages, the root disk's key also with the files from guest/ copied into it. A run finds the
image for its key, or builds it aside and renames it when complete; two runs at once build it
once, under a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from bpflab.tools.vm.common import CACHE, GUEST_IPV4, GUEST_IPV6, GUEST_MAC, SmokeError, say

GUEST_FILES = Path(__file__).resolve().parent / "guest"
# What the guest needs: a kernel and an initrd that mounts the root disk, iproute2, and the
# loader's python3 and libbpf1. (minbase already has tar, mount and dmesg.)
PACKAGES = ("linux-image-amd64", "initramfs-tools", "kmod", "udev", "iproute2", "python3", "libbpf1")
# Only what mounts the root disk goes into the initrd: 5 MB instead of 34, and under TCG the guest
# reaches its init about 10 s sooner. virtio_net is loaded later, from the root disk.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4")


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


def run_disk(path: Path) -> None:
    """This run's settings for the guest, as a tar archive it reads from its second disk."""
    env = f"GUEST_MAC={GUEST_MAC}\nGUEST_IPV4={GUEST_IPV4}\nGUEST_IPV6={GUEST_IPV6}\n".encode()
    with tarfile.open(path, "w") as tar:
        member = tarfile.TarInfo("guest.env")
        member.size = len(env)
        tar.addfile(member, BytesIO(env))
