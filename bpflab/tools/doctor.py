"""`python -m bpflab doctor`: is this machine ready for the labs? Each check says how to fix it."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

from bpflab import testrun
from bpflab.attach import attach_xdp, xdp_mode
from bpflab.programs import BPF_PROG_TYPE_XDP, ProgramError, load_raw, load_text
from bpflab.verdicts import XDP_PASS

MIN_KERNEL = (5, 18)  # XDP live-frames test-run, used by the load generator
PROVISION = "run `make provision` (the project's Ansible playbook)"
TRIVIAL = "#include <uapi/linux/bpf.h>\nint doctor_pass(struct xdp_md *ctx) { return XDP_PASS; }\n"


class Problem(Exception):
    """A check that failed; the message says what to do."""


def check_root() -> str:
    if os.geteuid() != 0:
        raise Problem("not root: loading BPF programs and making namespaces need root; use sudo")
    return "running as root"


def check_kernel() -> str:
    release = platform.release()
    version = tuple(int(x) for x in release.split("-")[0].split(".")[:2])
    if version < MIN_KERNEL:
        raise Problem(f"kernel {release} is older than {'.'.join(map(str, MIN_KERNEL))}: use a newer kernel")
    return f"kernel {release}"


def check_jit() -> str:
    value = Path("/proc/sys/net/core/bpf_jit_enable").read_text().strip()
    if value == "0":
        raise Problem("the BPF JIT is off: sysctl -w net.core.bpf_jit_enable=1")
    return "BPF JIT enabled"


def check_btf() -> str:
    if not Path("/sys/kernel/btf/vmlinux").exists():
        raise Problem("no /sys/kernel/btf/vmlinux: use a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    return "kernel BTF present"


def check_bpffs() -> str:
    mounts = Path("/proc/mounts").read_text().split("\n")
    if not any(line.split()[2:3] == ["bpf"] for line in mounts if line):
        raise Problem(f"bpffs is not mounted: {PROVISION}, or mount -t bpf bpf /sys/fs/bpf")
    return "bpffs mounted"


def check_headers() -> str:
    build = Path(f"/lib/modules/{platform.release()}/build")
    if not (build / "include").is_dir():
        raise Problem(f"no kernel headers at {build}: {PROVISION}")
    target = build.resolve()
    if platform.release().split("-")[0] not in target.name:
        return f"kernel headers linked from another version ({target.name}); fine for the labs' UAPI use"
    return f"kernel headers at {target}"


def check_toolchain() -> str:
    """The versions that decide what the verifier is given: which clang, BCC and Python, on which distro."""
    lines = Path("/etc/os-release").read_text().splitlines()
    distro = dict(line.split("=", 1) for line in lines if "=" in line)
    try:
        clang = subprocess.run(["clang", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise Problem(f"no clang ({exc}): {PROVISION}") from exc
    try:
        import bcc

        bcc_version = getattr(bcc, "__version__", "?")
    except ImportError:
        bcc_version = "missing (see the next check)"
    return (f"toolchain: {distro.get('PRETTY_NAME', '?').strip(chr(34))}, "
            f"{clang.splitlines()[0].strip()}, BCC {bcc_version}, Python {platform.python_version()}")


def check_bcc() -> str:
    try:
        load_text(TRIVIAL, "doctor_pass", "xdp").close()
    except ImportError as exc:
        raise Problem(f"BCC does not import ({exc}): {PROVISION}; use the project venv") from exc
    except ProgramError as exc:
        raise Problem(f"BCC cannot build a trivial program: {exc.explain()}") from exc
    return "BCC compiles and loads an XDP program"


def check_testrun() -> str:
    fd = load_raw(BPF_PROG_TYPE_XDP, XDP_PASS, "doctor_pass")
    try:
        result = testrun.run(fd, bytes(64))
    finally:
        os.close(fd)
    if result.verdict != XDP_PASS:
        raise Problem(f"BPF_PROG_TEST_RUN returned {result.verdict}, expected XDP_PASS (2)")
    return "BPF_PROG_TEST_RUN works"


def check_native_xdp() -> str:
    from bpflab.topology import Topology

    fd = load_raw(BPF_PROG_TYPE_XDP, XDP_PASS, "doctor_pass")
    try:
        with Topology(peer_xdp=False) as topo:
            attach_xdp(topo.server.netns, topo.server.ifname, fd, "native")
            mode = xdp_mode(topo.server.netns, topo.server.ifname)
    finally:
        os.close(fd)
    if mode != "native":
        raise Problem(f"XDP on veth runs in {mode} mode, not native: use a kernel with veth XDP support")
    return "native XDP on veth"


CHECKS: list[Callable[[], str]] = [
    check_root, check_kernel, check_jit, check_btf, check_bpffs, check_headers,
    check_toolchain, check_bcc, check_testrun, check_native_xdp,
]


def main() -> int:
    """Run every check, print one line each, and return 0 only if all passed."""
    failed = 0
    for check in CHECKS:
        try:
            print(f"[ ok ] {check()}", flush=True)
        except Problem as problem:
            failed += 1
            print(f"[FAIL] {problem}", flush=True)
        except Exception as exc:  # a check that crashed is a failed check, not a crashed doctor
            failed += 1
            print(f"[FAIL] {check.__name__}: {type(exc).__name__}: {exc}", flush=True)
    print("All checks passed." if not failed else f"{failed} check(s) failed: fix them, then run again.")
    return 1 if failed else 0
