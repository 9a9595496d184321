"""`make vm-smoke`: the reference XDP echo, natively attached to a virtio NIC in a real guest.

Vagrant boxes cannot be downloaded where the course is tested, so this is what stands in for
`vagrant up`: a minimal Debian guest (debootstrap, cached; Debian 12 with Linux 6.1 by default, or
Debian 13 with Linux 6.12: `--suite trixie`) boots under QEMU with a
multi-queue virtio-net NIC on a multi_queue tap in a network namespace of its own. In the guest
the reference program (bpf/xdp_icmp_echo.c) is attached in driver mode, the kernel's own echo is
switched off, and the host pings the guest. It passes when every ping is answered, `ip -d link`
in the guest shows native `xdp` (not `xdpgeneric`), and the guest kernel never says it fell back
to "locked tx mode" (what virtio-net does with fewer queue pairs than XDP needs). In the same boot
the guest's verifier also checks every other program the course ships: each lab's reference, every
entry at its own hook (BPF_PROG_TYPE_XDP, BPF_PROG_TYPE_SCHED_CLS at "tc", BPF_PROG_TYPE_SOCK_OPS at
"sock_ops": tcp-state's parts), and the benchmark's tools in bpf/tools; the run fails if it rejects
any. A sock_ops program is attached to a cgroup v2 of its own in the guest and runs on a TCP
connection over the guest's loopback made from that cgroup; the run fails if the attach is refused
or the program's hash maps stay empty. The others are loaded without being attached.

    netns vmsmoke-<pid>                            QEMU guest, 2 vCPUs, the suite's kernel
    tap vmsmoke<pid>, multi_queue        <====>    virtio-net-pci, 4 queue pairs (mq=on)
    198.51.100.1/24, 2001:db8:1::1/64              198.51.100.2/24, 2001:db8:1::2/64, XDP echo

How the programs get into the guest: they are BCC-flavoured C (`BPF_ARRAY`, `map.lookup()`)
that plain clang cannot build, and the guest has no BCC. So the host compiles each with the
course's own runtime (`programs.compile_source`, BCC, once a file), takes the very instructions
BCC made for each entry (`dump_func`) and, from the host kernel, the type and sizes of each map the
instructions load; the guest's small loader (guest/xdp_loader.py, ctypes on libbpf) makes the same
maps, once a file (its programs share them), writes their fds into those instructions and loads
them. The guest kernel's verifier checks them afresh: the bytecode students' programs become,
verified and run by the guest's own kernel. BCC takes about 4 s a file, so the host compiles them
in worker processes while the guest boots, and hands them over as one line of JSON through a
virtio-serial port (QEMU's end is a unix socket in the run's folder).

QEMU uses KVM where it works and TCG otherwise: nested KVM can hang after the boot loader or
make QEMU abort, so a KVM guest whose kernel prints nothing within KVM_PROBE_SECONDS is stopped
and booted again with TCG.
Everything a run makes is named after its pid (netns `vmsmoke-<pid>`), so the next run removes
what a killed one left; QEMU is always stopped by its pid, and dies with the run that started it.

This module runs it and checks what the guest said; the parts live beside it: `image` (the cached
guest image and this run's settings disk), `bytecode` (the programs as BCC built them, their maps
described), `qemu` (netns, tap, QEMU's lifecycle, cleanup of killed runs), `common` (the cache,
the guest's addresses, SmokeError, `say`) and guest/ (the files copied into the guest).
"""

from __future__ import annotations

import base64
import multiprocessing
import re
import time
from concurrent.futures import ProcessPoolExecutor

from bpflab.processes import die_with_parent, restore_sigterm, signals_held, sigterm_interrupts
from bpflab.tools import SUITES
from bpflab.tools.vm.bytecode import INSN, describe, objects, targets
from bpflab.tools.vm.common import GUEST_IPV4, GUEST_IPV6, SmokeError, say
from bpflab.tools.vm.image import guest_image, run_disk
from bpflab.tools.vm.qemu import QUEUES, Run, boot, cleanup_stale, make_netns
from bpflab.topology import PingResult, run_in

COMPILERS = 2  # worker processes running BCC while the guest boots
READY_SECONDS = 240  # TCG on a loaded 2-core machine
PINGS = 10
COUNTER_SECONDS = 30  # the guest prints its counters every 0.3 s; TCG under load can be far slower
LOCKED_TX = "locked tx mode"


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


def verdicts(console: str, programs: list[str]) -> list[str]:
    """The programs the guest's verifier did not accept, each with the end of its log."""
    problems = []
    for name in programs:
        said = guest_lines(console, f"verifier {name}")
        if not any(line.startswith("accepted") for line in said):
            log = "".join(f"\n    {line[2:]}" for line in said if line.startswith("| "))
            problems.append(f"the guest's verifier did not accept {name}{log}")
    return problems


def cgroup_runs(console: str, sock_ops: list[str]) -> list[str]:
    """The sock_ops programs not attached to their cgroup, or whose hash maps a connection from it
    left empty: loaded but never run, they would prove nothing about the hook."""
    problems = []
    for name in sock_ops:
        attached = guest_lines(console, f"attach {name}")
        if not any(line.startswith("cgroup ok") for line in attached):
            problems.append(f"{name} was not attached to a cgroup in the guest: {attached[:1]}")
            continue
        ran = guest_lines(console, f"ran {name}")
        counts = [int(n) for line in ran if "entries:" in line
                  for n in re.findall(r"\b\d+\b", line.split("entries:")[1])]
        if not any(counts):
            problems.append(f"{name} did not record the guest's loopback connection: {ran[:1]}")
    return problems


def check(console: str, pings: dict[str, PingResult], programs: list[str],
          sock_ops: tuple[str, ...] = ()) -> list[str]:
    """Why the run failed, in plain words; empty when it passed. `sock_ops`: the programs of
    `programs` the guest must attach to a cgroup and see run."""
    problems = verdicts(console, programs) + cgroup_runs(console, list(sock_ops))
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
def smoke(run: Run, accel: str, times: dict[str, float], compilers: ProcessPoolExecutor,
          suite: str) -> list[str]:
    """Compile the programs while the guest boots, hand them over, ping; return the problems found."""
    start = time.monotonic()
    programs = targets()
    compiling = [compilers.submit(describe, group) for group in objects(programs)]
    image, built = guest_image(suite)
    times["image build" if built else "image (cached)"] = time.monotonic() - start
    say(f"image {image.root.name} ({'built' if built else 'cached'}), kernel {image.kernel.name}")

    run.folder.mkdir(parents=True, exist_ok=True)
    run_disk(run.folder / "run.tar")
    with signals_held():
        make_netns(run.netns, run.tap)
    guest = boot(run, image, run.folder / "run.tar", accel, times)
    descriptions = [description for future in compiling for description in future.result()]
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
    sock_ops = tuple(target.entry for target in programs if target.hook == "sock_ops")
    return check(guest.console(), pings, [target.entry for target in programs], sock_ops)


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
    programs = targets()
    sock_ops = sum(target.hook == "sock_ops" for target in programs)
    print(f"PASS ({SUITES[suite]}): native XDP on a {QUEUES}-queue virtio NIC answered every ping, "
          f"no locked tx mode; the guest's verifier accepted all {len(programs)} programs "
          f"and saw {sock_ops} sock_ops program(s) run in a cgroup", flush=True)
    return 0
