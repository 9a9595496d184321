"""The topology: two namespaces joined by veth, gone after every kind of ending."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from pyroute2 import netns

from bpflab.course.labs import ROOT
from bpflab.processes import pid_alive
from bpflab.topology import Topology, cleanup_stale, run_in
from tests.conftest import grading_child

HOLD = """
import time
from bpflab.topology import Topology
with Topology() as t:
    print(t.server.netns, flush=True)
    time.sleep(120)
"""


def spawn(code_or_argv: str | list[str]) -> subprocess.Popen:
    argv = [sys.executable, "-c", code_or_argv] if isinstance(code_or_argv, str) else code_or_argv
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def namespaces_of(pid: int) -> list[str]:
    return [name for name in netns.listnetns() if name.startswith(f"bpflab-{pid}-")]


def wait_for_namespaces(pid: int, timeout: float = 60, count: int = 2) -> list[str]:
    """Wait until `pid` has made `count` namespaces (a topology has 2). Polls often: some
    callers act on the moment, and listing /run/netns is cheap."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := namespaces_of(pid)) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"process {pid} made no topology within {timeout} s")


def test_both_sides_reach_each_other_over_v4_and_v6():
    with Topology() as topo:
        assert topo.ping(count=3).received == 3
        assert topo.ping(count=3, ipv6=True).received == 3
        back = run_in(topo.server.netns, ["ping", "-c", "1", "-W", "1", topo.client.ipv4])
        assert back.returncode == 0, back.stdout


def test_names_carry_the_run_and_everything_goes_with_the_namespaces():
    with Topology() as topo:
        names = (topo.client.netns, topo.server.netns)
        assert all(name.startswith(f"bpflab-{os.getpid()}-") for name in names)
        assert all(name in netns.listnetns() for name in names)
        assert str(os.getpid()) in topo.server.ifname and len(topo.server.ifname) <= 15
    assert not any(name in netns.listnetns() for name in names)


def test_peer_xdp_program_is_on_the_client():
    with Topology() as topo:
        shown = run_in(topo.client.netns, ["ip", "link", "show", topo.client.ifname]).stdout
        assert "xdp" in shown and "peer_pass" in run_in(topo.client.netns, ["ip", "-d", "link"]).stdout
        topo.remove_peer_xdp()
        shown = run_in(topo.client.netns, ["ip", "-d", "link", "show", topo.client.ifname]).stdout
        assert "prog/xdp" not in shown


def test_kernel_echo_can_be_switched_off():
    with Topology() as topo:
        topo.kernel_echo(False)
        assert topo.ping(count=2).received == 0
        topo.kernel_echo(True)
        assert topo.ping(count=2).received == 2


def test_sigterm_cleans_up():
    holder = spawn(HOLD)
    holder.stdout.readline()  # the topology is built
    holder.send_signal(signal.SIGTERM)
    holder.wait(30)
    assert namespaces_of(holder.pid) == []


def test_sigterm_while_building_cleans_up():
    holder = spawn(HOLD)
    wait_for_namespaces(holder.pid)  # the namespaces exist: the build is under way or done
    holder.send_signal(signal.SIGTERM)
    holder.wait(30)
    assert namespaces_of(holder.pid) == []


def test_what_a_killed_run_left_is_removed_by_the_next():
    holder = spawn(HOLD)
    left = wait_for_namespaces(holder.pid)
    holder.kill()  # SIGKILL: no cleanup can run
    holder.wait(30)
    assert sorted(namespaces_of(holder.pid)) == sorted(left)
    with Topology():  # the next run starts by removing them
        assert namespaces_of(holder.pid) == []


def test_cleanup_spares_live_runs_unless_told():
    with Topology() as topo:
        assert topo.server.netns not in cleanup_stale()
        assert topo.server.netns in cleanup_stale(pid=os.getpid())


def test_the_cleanup_command_spares_live_runs_and_names_what_all_removes():
    """`make clean` (a student's `cleanup`) must not break another user's live lab or grader; the
    instructor's `--all` says whose namespaces it removes before it does."""
    cleanup = [sys.executable, "-m", "bpflab", "cleanup"]
    with Topology() as topo:
        done = subprocess.run(cleanup, cwd=ROOT, capture_output=True, text=True, check=True)
        assert netns_exists(topo.server.netns) and netns_exists(topo.client.netns)
        kept = re.search(r"kept \d+ of runs still alive \(pids ([\d ]+)\)", done.stdout)  # others may run too
        assert kept and str(os.getpid()) in kept.group(1).split(), done.stdout
    # --all removes every live run's namespaces on the machine, so it runs where it can see only
    # its own: a mount namespace whose /run/netns is a fresh tmpfs, with one live holder in it.
    script = (f"mount -t tmpfs tmpfs /run/netns && {sys.executable} -c '{HOLD_BRIEFLY}' & sleep 3; "
              f"echo made: $(ls /run/netns); {sys.executable} -m bpflab cleanup --all; "
              "echo left: $(ls /run/netns); wait")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    made = re.search(r"^made: (.*)$", done.stdout, re.M).group(1).split()
    assert len(made) == 2, done.stdout + done.stderr
    for name in made:
        pid = name.split("-")[1]
        assert f"removing {name}, of a run still alive: pid {pid}, {sys.executable} -c" in done.stdout
    assert "removed 2 namespace(s)" in done.stdout and "\nleft:\n" in done.stdout, done.stdout


HOLD_BRIEFLY = HOLD.replace("time.sleep(120)", "time.sleep(6)").replace("'", '"')


def netns_exists(name: str) -> bool:
    return name in netns.listnetns()


# xdp-icmp: its network tests run for several seconds after the topology appears, so the
# signal lands in the middle of the graded run.
LONG_GRADE = [sys.executable, "-m", "grader", "grade", "bpf", "--lab", "xdp-icmp"]


def test_ctrl_c_in_a_graded_run_leaves_nothing():
    grader = spawn(LONG_GRADE)
    child = grading_child(grader.pid)  # the graded run, and so its namespaces, live there
    wait_for_namespaces(child)
    grader.send_signal(signal.SIGINT)
    assert grader.wait(60) == 130, grader.stderr.read()
    assert namespaces_of(child) == []


def test_a_killed_grader_is_cleaned_up_by_the_next_run():
    grader = spawn(LONG_GRADE)
    child = grading_child(grader.pid)
    wait_for_namespaces(child)
    grader.kill()  # and the child with it (PR_SET_PDEATHSIG): a hanging program cannot outlive it
    grader.wait(30)
    deadline = time.monotonic() + 30
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(child), "the graded run outlived its grader"
    assert namespaces_of(child), "kill -9 should have left the namespaces for the next run"
    again = subprocess.run([sys.executable, "-m", "grader", "grade", "bpf", "--lab", "hello-xdp"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert "Score: 10/10" in again.stdout
    assert namespaces_of(child) == []
