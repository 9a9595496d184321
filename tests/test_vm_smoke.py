"""`make vm-smoke` for real (a QEMU guest pinged through native XDP on virtio, every program
checked by its verifier, tcp-state's sock_ops part attached to a cgroup and run), and its tear-down.

A cold run builds the guest image first (3 to 7 minutes here, debootstrap's time growing with the
machine's load); it is cached in /var/cache/bpflab/vm-smoke, and a warm run takes 30 to 65 s.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from bpflab.course.labs import ROOT, load_lab, program_labs
from bpflab.programs import BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP
from bpflab.tools import SUITES
from bpflab.tools.vm.bytecode import BPF_PROG_TYPE_SOCK_OPS, PROG_TYPES, objects, targets
from bpflab.tools.vm.qemu import cleanup_stale
from bpflab.tools.vm.smoke import LOCKED_TX, check
from bpflab.topology import PingResult

GUEST_KERNELS = {"bookworm": "6.1.", "trixie": "6.12."}
RUN_SECONDS = 900  # a cold run took 7 minutes on this 2-core machine while other suites ran
TCP_STATE = load_lab("tcp-state")  # five parts at three hooks, sharing maps: each must pass the guest


def start(suite: str = "bookworm") -> subprocess.Popen:
    argv = [sys.executable, "-m", "bpflab", "vm-smoke", "--suite", suite]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def qemu_pids(owner: int) -> list[int]:
    """QEMU processes started by the run of pid `owner` (named after its tap, vmsmoke<pid>)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"qemu-system-x86_64") and f"vmsmoke{owner}".encode() in argv:
            pids.append(int(cmdline.parent.name))
    return pids


def leftovers(owner: int) -> list[str]:
    """What the run of pid `owner` left: its netns, a tap in the root netns, QEMU processes."""
    left = [name for name in netns.listnetns() if name == f"vmsmoke-{owner}"]
    with IPRoute() as ip:
        left += [f"link {i}" for i in ip.link_lookup(ifname=f"vmsmoke{owner}")]
    return left + [f"qemu pid {pid}" for pid in qemu_pids(owner)]


def wait_for_qemu(run: subprocess.Popen) -> None:
    deadline = time.monotonic() + RUN_SECONDS
    while not qemu_pids(run.pid):
        assert run.poll() is None, run.stdout.read()
        assert time.monotonic() < deadline, "QEMU never started"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("suite", sorted(SUITES))  # Linux 6.1 and 6.12: the kernels students run
def test_guest_answers_pings_with_native_xdp(suite: str):
    run = start(suite)
    output, _ = run.communicate(timeout=RUN_SECONDS)
    assert run.returncode == 0, output[-4000:]
    assert output.rstrip().splitlines()[-1].startswith(f"PASS ({SUITES[suite]})"), output[-4000:]
    assert f"kernel vmlinuz-{GUEST_KERNELS[suite]}" in output, output[-4000:]
    assert re.search(r"guest: link: .* mtu 1500 xdp qdisc", output), output
    assert re.search(r"guest: link: prog/xdp id \d+ name xdp_icmp_echo", output), output
    assert "ping IPv4: 10/10 answered" in output and "ping IPv6: 10/10 answered" in output
    for target in targets():
        assert re.search(rf"guest: verifier {target.entry}: accepted", output), output
    assert_tcp_state_ran(output)
    assert not re.search(rf"guest: kmsg: .*{LOCKED_TX}", output), output
    assert not leftovers(run.pid)


def assert_tcp_state_ran(output: str) -> None:
    """Every part of tcp-state accepted in the guest, named from its manifest (not from `targets()`,
    which could drop one); its sock_ops part attached to a cgroup and run by a connection there,
    into the `flow_states` it shares with xdp_flow_gate."""
    for entry in TCP_STATE.entries:
        assert guest_said(rf"verifier {entry}: accepted", output), output
    assert [entry for entry, hook in TCP_STATE.parts if hook == "sock_ops"] == ["sockops_flows"]
    assert guest_said("attach sockops_flows: cgroup ok", output), output
    assert guest_said("ran sockops_flows: .*entries: flow_states [1-9]", output), output
    shared = r"shared map flow_states of tcp_state\.c: fd \d+ in sockops_flows, xdp_flow_gate$"
    assert guest_said(shared, output), output


def guest_said(pattern: str, output: str) -> bool:
    """A line the guest wrote (relayed by the host as `  guest: ...`) matches `pattern`."""
    return re.search(rf"^  guest: {pattern}", output, re.MULTILINE) is not None


@pytest.mark.slow
def test_sigterm_while_the_guest_boots_leaves_nothing():
    run = start()
    wait_for_qemu(run)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 1 and "FAIL: interrupted" in output, output
    assert not leftovers(run.pid)


@pytest.mark.slow
def test_a_killed_run_is_cleaned_up_by_the_next():
    run = start()
    wait_for_qemu(run)
    run.kill()
    run.communicate()
    deadline = time.monotonic() + 10
    while qemu_pids(run.pid) and time.monotonic() < deadline:  # QEMU dies with its parent
        time.sleep(0.2)
    assert not qemu_pids(run.pid)
    assert f"vmsmoke-{run.pid}" in netns.listnetns()  # ...but the netns stays until the next run
    assert f"vmsmoke-{run.pid}" in cleanup_stale()  # what a run does first
    assert not leftovers(run.pid)


PROGRAMS = ["xdp_icmp_echo", "xdp_dns", "sockops_flows"]
SOCK_OPS = ("sockops_flows",)
ATTACHED = ("VMSMOKE attach sockops_flows: cgroup ok "
            "(/sys/fs/cgroup/vmsmoke-sockops_flows, BPF_CGROUP_SOCK_OPS)")
RAN = "VMSMOKE ran sockops_flows: a TCP connection over loopback from its cgroup; entries: flow_states 1"
GOOD_CONSOLE = f"""\
VMSMOKE kernel echo off: ipv4 1 ipv6 1
VMSMOKE verifier xdp_icmp_echo: accepted (559 instructions, 1.18 s)
VMSMOKE verifier xdp_dns: accepted (1142 instructions, 3.10 s)
VMSMOKE verifier sockops_flows: accepted (170 instructions, 0.00 s)
{ATTACHED}
{RAN}
VMSMOKE link: 2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdp qdisc mq state UP
VMSMOKE link: prog/xdp id 3 name xdp_icmp_echo tag 782afd02681976f6 jited
VMSMOKE replies ipv4 10 ipv6 10
"""


def pings(received: int = 10) -> dict[str, PingResult]:
    return {family: PingResult(10, received, "") for family in ("IPv4", "IPv6")}


def test_every_lab_reference_and_tool_is_checked_and_only_the_echo_attached():
    found = {target.entry: target for target in targets()}
    entries = {entry for lab in program_labs() for entry in lab.entries}
    assert entries | {"dns_query_generator", "dns_reply_counter", "helper_cost", "tcp_dropper"} == set(found)
    assert {"gym_bounds", "gym_signature"} <= entries  # the verifier gym: every exercise
    assert [entry for entry, target in found.items() if target.attach] == ["xdp_icmp_echo"]
    assert PROG_TYPES[found["tc_icmp_echo"].hook] == BPF_PROG_TYPE_SCHED_CLS


def test_each_tcp_state_part_is_checked_at_its_own_hook_from_one_compile():
    found = {target.entry: target for target in targets()}
    assert {entry: found[entry].hook for entry in TCP_STATE.entries} == dict(TCP_STATE.parts)
    assert PROG_TYPES[found["sockops_flows"].hook] == BPF_PROG_TYPE_SOCK_OPS == 13
    assert PROG_TYPES[found["xdp_flow_gate"].hook] == BPF_PROG_TYPE_XDP
    groups = [tuple(target.entry for target in group) for group in objects(targets())]
    assert tuple(TCP_STATE.entries) in groups  # one object: the parts share its maps in the guest too
    assert sorted(entry for group in groups for entry in group) == sorted(found)


def test_checks_pass_a_good_run():
    assert check(GOOD_CONSOLE, pings(), PROGRAMS, SOCK_OPS) == []


@pytest.mark.parametrize(("console", "received", "expected"), [
    (GOOD_CONSOLE + "[ 5.1] virtio_net virtio0 eth0: XDP request 2 queues but max is 2. XDP_TX and "
     "XDP_REDIRECT will operate in a slower locked tx mode.\n", 10, "locked tx mode"),
    (GOOD_CONSOLE.replace(" xdp qdisc", " xdpgeneric qdisc").replace("prog/xdp", "prog/xdpgeneric"), 10,
     "native xdp"),
    (GOOD_CONSOLE.replace("ipv4 1 ipv6 1", "ipv4 0 ipv6 1"), 10, "echo was not switched off"),
    (GOOD_CONSOLE, 9, "9 of 10 pings answered"),
    (GOOD_CONSOLE.replace("replies ipv4 10", "replies ipv4 0"), 10, "counted 0 IPv4"),
    (GOOD_CONSOLE.replace("VMSMOKE verifier xdp_dns: accepted (1142 instructions, 3.10 s)",
                          "VMSMOKE verifier xdp_dns: rejected (errno 13, 1117 instructions, 0.07 s)\n"
                          "VMSMOKE verifier xdp_dns: | R3 min value is outside of the allowed memory range"),
     10, "did not accept xdp_dns\n    R3 min value is outside"),
    (GOOD_CONSOLE.replace("VMSMOKE verifier xdp_dns: accepted (1142 instructions, 3.10 s)\n", ""), 10,
     "did not accept xdp_dns"),
    (GOOD_CONSOLE.replace(ATTACHED + "\n", "").replace(RAN + "\n", ""), 10,
     "sockops_flows was not attached to a cgroup in the guest: []"),
    (GOOD_CONSOLE.replace(ATTACHED, "VMSMOKE attach sockops_flows: cgroup refused: errno 22"), 10,
     "sockops_flows was not attached to a cgroup in the guest: ['cgroup refused: errno 22']"),
    (GOOD_CONSOLE.replace("flow_states 1", "flow_states 0"), 10, "sockops_flows did not record"),
    (GOOD_CONSOLE.replace(RAN, "VMSMOKE ran sockops_flows: the loopback connection failed: OSError()"), 10,
     "sockops_flows did not record the guest's loopback connection: ['the loopback connection failed"),
])
def test_checks_name_what_went_wrong(console, received, expected):
    problems = check(console, pings(received), PROGRAMS, SOCK_OPS)
    assert any(expected in problem for problem in problems), problems
