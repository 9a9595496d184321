"""Debian 13's toolchain (clang 19, BCC 0.31) grades every reference to full marks, on this kernel.

The host's own toolchain (Debian 12: clang 14, BCC 0.26) is graded by test_grader; this test
fails when a reference stops verifying with the other one. The root is made by debootstrap and
provisioned by the playbook inside it, as on a fresh machine (bpflab/tools/toolchain.py). So that its
downloads overlap the rest of the suite, conftest starts building and provisioning it as soon as
this test is collected; the test waits for that, then grades.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpflab.course.labs import ROOT, all_labs
from bpflab.tools import toolchain
from grader import cgroup

SUITE = "trixie"
PREPARE_SECONDS = 1800  # debootstrap and a first provisioning: 4 minutes here, more on a slow mirror
GRADE_SECONDS = 900  # every lab graded once: about a minute


def mounts_under(root: Path) -> list[str]:
    """Mount points of this (the host's) mount namespace inside `root`."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(str(root))]


@pytest.mark.slow
def test_every_reference_scores_full_marks_with_debian_13s_toolchain(request: pytest.FixtureRequest) -> None:
    prepare = getattr(request.config, "toolchain_prepare", None)
    if prepare is not None:
        prepare.wait(timeout=PREPARE_SECONDS)
        log = (ROOT / "artifacts" / f"toolchain-{SUITE}-prepare.out").read_text()
        assert prepare.returncode == 0, log[-4000:]
    done = subprocess.run([sys.executable, "-m", "bpflab", "toolchain", SUITE], cwd=ROOT, capture_output=True,
                          text=True, timeout=GRADE_SECONDS, check=False)
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"clang 19\.", output), output
    for lab in all_labs():
        assert re.search(rf"{SUITE}: {lab.id} (\d+)/\1 in", output), f"{lab.id} not at full marks:\n{output}"
    assert not mounts_under(toolchain.root_of(SUITE)), "the root's mounts outlived the run"


def children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(proc.name))
    return found


def pid_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def processes_in(namespace: str) -> list[int]:
    """Processes in PID namespace `namespace` (another run, e.g. the suite's own provisioning of
    the root, may be in the root at the same time: it has a namespace of its own)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if pid_namespace(int(proc.name)) == namespace:
                    pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_a_killed_run_leaves_no_process_and_no_mount(tmp_path: Path) -> None:
    """kill -9 of the run: its PID namespace dies with it, and its mount namespace (with the /run
    that named its network namespaces) with that."""
    root = toolchain.root_of(SUITE)
    assert root.is_dir(), "the root is made by the test above"
    log = tmp_path / "inside.log"
    command = "ip netns add bpflab-probe && echo ready && sleep 300"
    script = (f"from pathlib import Path; from bpflab.tools import toolchain; "
              f"toolchain.run_inside(toolchain.root_of({SUITE!r}), {command!r}, Path({str(log)!r}), 600)")
    run = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert run.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        unshare = children(run.pid)
        assert len(unshare) == 1, unshare
        namespace = pid_namespace(children(unshare[0])[0])  # unshare's child: the run's first process
        assert namespace != pid_namespace(os.getpid()) and len(processes_in(namespace)) >= 2
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 10
    while (processes_in(namespace) or mounts_under(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_in(namespace), "processes of the killed run live on"
    assert not mounts_under(root), "mounts of the killed run live on"


@pytest.mark.slow
def test_the_roots_grader_leaves_this_machines_cgroups_alone(tmp_path: Path) -> None:
    """Found in CI: the root's grader, in a PID namespace of its own, took this machine's live
    graders for dead ones and removed the memory cgroup a graded child was about to join (that
    run stopped with exit status 1, and the reference scored 0)."""
    group = cgroup.MemoryCgroup()
    if group.path is None:
        pytest.skip("no memory cgroup on this machine")
    try:
        root = toolchain.root_of(SUITE)
        with toolchain.locked(SUITE):
            toolchain.copy_course(root)
            command = ".venv/bin/python -c 'from grader import cgroup; print(cgroup.cleanup_stale())'"
            status = toolchain.run_inside(root, command, tmp_path / "inside.log", 120)
        assert status == 0, (tmp_path / "inside.log").read_text()
        assert group.path.is_dir(), (tmp_path / "inside.log").read_text()
    finally:
        group.remove()
