"""`make toolchain`: the course on another Debian's compiler (Debian 13's by default), against this kernel.

Why: the programs are C that clang turns into BPF, and the kernel's verifier judges what clang
made, not what the student wrote. Two clangs can shape one loop differently, and one shape
verifies where the other does not (Debian 13's clang 19 once turned the checksum loop that
Debian 12's clang 14 compiled well into "The sequence of 8193 jumps is too complex"). So the
references are graded with a second toolchain too: a Debian root made by debootstrap and
provisioned inside by the course's own playbook, exactly as on a fresh machine (`make provision`,
then `python -m grader grade --lab LAB` for every lab), loading into the host's kernel.

    /var/cache/bpflab/toolchains/<suite>/    the root (debootstrap minbase + make), kept between runs
        srv/bpflab/                          a copy of this checkout, with the root's own .venv
        srv/results/<lab>.json               what the grader wrote (Gradescope results.json)

How a run enters the root: `unshare` gives it a PID and a mount namespace of its own. Everything
mounted for it (proc, sys, dev, a bpffs of its own, a tmpfs /run that holds its network
namespaces' names) belongs to that mount namespace, and every process to that PID namespace,
whose first process dies with the run (`--kill-child`, even after a `kill -9`). So nothing a run
made outlives it: no mount, no process, no network namespace (their names lived in its /run),
and with them no veth and no attached program. The root is bind-mounted onto itself before the
rest: `ip netns exec` remounts / as a slave, which fails unless / is a mount point
(`"mount --make-rslave /" failed`).

The root gets nothing of this machine but its DNS resolver and, where there is one, its CA
bundle (at /run/host-ca.crt, named by PIP_CERT and SSL_CERT_FILE: machines whose package access
goes through a TLS proxy need it, and it is never written into the root), and in the run's
environment only, its proxies (apt's Acquire::http::Proxy among them) and pip index URLs.
Debian's packages may not start services in it (policy-rc.d): NSD's would listen on the host's network.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bpflab.course.labs import ROOT, all_labs
from bpflab.processes import die_with_parent
from bpflab.tools import SUITES

CACHE = Path("/var/cache/bpflab/toolchains")
MIRROR = "http://deb.debian.org/debian"
# What a fresh Debian machine has that minbase lacks, and the README's commands need.
PACKAGES = ("make", "ca-certificates")
COURSE = "/srv/bpflab"  # where the checkout is copied, inside the root
RESULTS = "/srv/results"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# Not copied into the root: the host's own venv and outputs, and caches.
NOT_COPIED = (".git", ".venv", "dist", "artifacts", ".vagrant", "__pycache__", ".pytest_cache",
              ".ruff_cache", "results.json")
POLICY_RC = "#!/bin/sh\n# bpflab: no service starts in this root (a build root, not a machine)\nexit 101\n"
# A PID and a mount namespace of the run's own; the first process dies with the run.
ENTER_ARGV = ("unshare", "--fork", "--pid", "--kill-child", "--mount", "--propagation", "private")
# What a run executes as it enters: mounts in the new mount namespace, then chroot. "$0" is the root.
ENTER = r"""
set -eu
R=$0
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount -t bpf bpf "$R/sys/fs/bpf"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mkdir -p "$R/run/lock"
if [ -f "$HOST_CA" ]; then touch "$R/run/host-ca.crt"; mount --bind -o ro "$HOST_CA" "$R/run/host-ca.crt"; fi
cp /etc/resolv.conf "$R/etc/resolv.conf"
exec chroot "$R" "$@"
"""
VERSIONS = r"""
. /etc/os-release; echo "distro=$PRETTY_NAME"
echo "clang=$(clang --version | sed -n 's/.*clang version \([0-9.]*\).*/\1/p;q')"
echo "bcc=$(dpkg-query -W -f='${Version}' python3-bpfcc)"
echo "python=$(python3 -c 'import platform; print(platform.python_version())')"
"""


class ToolchainError(Exception):
    """The root could not be built or entered; the message says which step and why."""


@dataclass
class LabResult:
    lab: str
    score: float
    max_score: float
    failed: list[str]  # names of the tests that lost points

    @property
    def full_marks(self) -> bool:
        return self.max_score > 0 and self.score == self.max_score


def say(text: str) -> None:
    print(f"toolchain: {text}", flush=True)


def root_of(suite: str) -> Path:
    return CACHE / suite


def build_root(suite: str) -> tuple[Path, bool]:
    """The suite's root, made by debootstrap first if it is not there; (root, built).

    Built aside and renamed when complete, so a killed build is started afresh next time.
    """
    root = root_of(suite)
    if root.is_dir():
        return root, False
    seconds = debootstrap(root, suite, PACKAGES)
    say(f"debootstrap {suite} took {seconds:.0f} s")
    return root, True


def debootstrap(root: Path, suite: str, packages: tuple[str, ...]) -> float:
    """A minbase root with `packages`, where no service may start; built aside, renamed when complete
    (a killed build is started afresh next time). Its duration in seconds."""
    start = time.monotonic()
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(partial),
            MIRROR]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise ToolchainError(f"debootstrap {suite} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    policy = partial / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC)
    policy.chmod(0o755)
    partial.rename(root)
    return time.monotonic() - start


def copy_course(root: Path, course: str = COURSE) -> None:
    """This checkout into the root at `course`, replacing the last copy but keeping its .venv."""
    dest = root / course.lstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        if old.name == ".venv":
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    ignore = shutil.ignore_patterns(*NOT_COPIED)
    for item in ROOT.iterdir():
        if item.name in NOT_COPIED:
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(item, dest / item.name)
    shutil.rmtree(root / RESULTS.lstrip("/"), ignore_errors=True)
    (root / RESULTS.lstrip("/")).mkdir(parents=True)


# The host's package access that a root needs to reach the same mirrors: its proxies, and the
# pip index it is told to use (URLs only: a pip config file may name files the root lacks).
PASSED_ON = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
             "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")


def environment() -> dict[str, str]:
    """A fresh machine's environment, plus the host's CA bundle, proxies (apt's own among them)
    and pip index if it has them: for the run only, never written into the root."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOST_CA": str(HOST_CA)}
    if HOST_CA.is_file():
        env.update(PIP_CERT="/run/host-ca.crt", SSL_CERT_FILE="/run/host-ca.crt",
                   REQUESTS_CA_BUNDLE="/run/host-ca.crt")
    env.update({name: os.environ[name] for name in PASSED_ON if name in os.environ})
    if "http_proxy" not in env and (proxy := apt_proxy()):
        env["http_proxy"] = proxy
    return env


def apt_proxy() -> str:
    """The host apt's Acquire::http::Proxy, if it sets one ("" if not, or if apt-config is absent)."""
    try:
        done = subprocess.run(["apt-config", "shell", "PROXY", "Acquire::http::Proxy"], capture_output=True,
                              text=True, check=False)
    except FileNotFoundError:
        return ""
    return done.stdout.partition("=")[2].strip().strip("'\"")


def run_inside(root: Path, command: str, log: Path, timeout: float, course: str = COURSE) -> int:
    """Run a shell command in the root (cwd `course`), its output appended to `log`; its exit status."""
    argv = [*ENTER_ARGV, "sh", "-c", ENTER, str(root), "sh", "-c", f"cd {course} && {command}"]
    with open(log, "a") as out:
        out.write(f"\n$ {command}\n")
        out.flush()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=environment(), preexec_fn=die_with_parent)  # its PID namespace too
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"`{command}` took over {timeout:.0f} s in the root (see {log})") from None
        finally:  # a time-out or Ctrl-C: its PID namespace goes with it
            if process.poll() is None:
                process.kill()
                process.wait()


def versions(root: Path, log: Path) -> dict[str, str]:
    """The root's distro, clang, BCC and Python, as the grader there uses them."""
    results = root / RESULTS.lstrip("/")
    (results / "versions.sh").write_text(VERSIONS)
    run_inside(root, f"sh {RESULTS}/versions.sh > {RESULTS}/versions.txt", log, 60)
    lines = (results / "versions.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def read_result(root: Path, lab: str) -> LabResult:
    path = root / RESULTS.lstrip("/") / f"{lab}.json"
    if not path.is_file():
        return LabResult(lab, 0, 0, ["(the grader wrote no results)"])
    data = json.loads(path.read_text())
    tests = data.get("tests", [])
    failed = [test["name"] for test in tests if test.get("score", 0) < test.get("max_score", 0)]
    return LabResult(lab, data.get("score", 0), sum(test.get("max_score", 0) for test in tests), failed)


@contextlib.contextmanager
def locked(suite: str):
    """One run per root at a time: a second waits for the first."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run(suite: str, labs: list[str], log: Path) -> tuple[dict[str, str], list[LabResult], dict[str, float]]:
    """Build or reuse the root, provision it with the README's command, grade every lab's reference
    (none: only build and provision)."""
    times: dict[str, float] = {}
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with locked(suite):
        start = time.monotonic()
        root, built = build_root(suite)
        times["debootstrap" if built else "root (cached)"] = time.monotonic() - start

        start = time.monotonic()
        copy_course(root)
        # `make lab`'s provisioning: the labs' packages, not the course's own check tools.
        status = run_inside(root, "make provision PLAYBOOK_VARS='-e install_dev_tools=false'", log, 1800)
        times["make provision"] = time.monotonic() - start
        if status != 0:
            raise ToolchainError(f"`make provision` failed in the {suite} root (exit {status}); see {log}")
        found = versions(root, log)
        say(f"{suite}: {found.get('distro')}, clang {found.get('clang')}, BCC {found.get('bcc')}, "
            f"Python {found.get('python')}; provisioned in {times['make provision']:.0f} s")

        results = []
        for lab in labs:
            start = time.monotonic()
            grade = f".venv/bin/python -m grader grade --lab {lab} --results {RESULTS}/{lab}.json"
            run_inside(root, grade, log, 600)
            times[lab] = time.monotonic() - start
            result = read_result(root, lab)
            results.append(result)
            failed = f"; lost points: {', '.join(result.failed)}" if result.failed else ""
            say(f"{suite}: {lab} {result.score:g}/{result.max_score:g} in {times[lab]:.0f} s{failed}")
    return found, results, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpflab toolchain", description=__doc__.splitlines()[0])
    parser.add_argument("suite", nargs="?", default="trixie", choices=SUITES)
    parser.add_argument("--labs", nargs="+", help="lab ids (default: every lab)")
    parser.add_argument("--prepare", action="store_true", help="only build and provision the root")
    parser.add_argument("--log", type=Path,
                        help="the root's whole output (default: artifacts/toolchain-SUITE.log)")
    args = parser.parse_args(argv)
    labs = [] if args.prepare else args.labs or [lab.id for lab in all_labs()]
    log = args.log or ROOT / "artifacts" / f"toolchain-{args.suite}.log"
    started = time.monotonic()
    try:
        found, results, times = run(args.suite, labs, log)
    except ToolchainError as err:
        print(f"FAIL: {err}", flush=True)
        return 1
    say("times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in times.items())
        + f"; total {time.monotonic() - started:.0f} s")
    if args.prepare:
        print(f"PASS: the {args.suite} root is provisioned "
              f"(clang {found.get('clang')}, BCC {found.get('bcc')})", flush=True)
        return 0
    short = [r for r in results if not r.full_marks]
    if short:
        print(f"FAIL: with clang {found.get('clang')} ({args.suite}), not full marks: "
              + ", ".join(f"{r.lab} {r.score:g}/{r.max_score:g}" for r in short), flush=True)
        return 1
    print(f"PASS: every reference scored full marks with clang {found.get('clang')}, "
          f"BCC {found.get('bcc')} ({found.get('distro')})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
