"""Measurements done right: distributions rather than one average, costs above a floor.

- `ping_rtts`: every reply's round-trip time from `ping`, for distributions and percentiles.
- `testrun_ns`: a program's in-kernel ns per run by BPF_PROG_TEST_RUN, and `floor_ns`, the
  same for an empty program at the same hook: report a program as ns above that floor.
  Test-run does not reset the packet between repeats, so time only a path that leaves the
  packet as it found it (a pass path), and say which. `single_run_ns` and
  `single_run_floor_ns` time a reply path instead, one run per call.
- `bpf_stats`: run time and count of a program under real traffic (with the kernel's run-time
  accounting on, `bpf_stats_enabled`), which does time the paths that rewrite the packet.
- `generated_answers_per_second`: a UDP server's answers per second under the in-kernel load
  generator (test-run's live-frames mode on the client's veth), no socket of the client's in
  the way: the same load for an XDP fast path and for the server behind it.
- `ping_rounds`: responders (the kernel's echo, programs) take turns answering pings, in an
  order that rotates from round to round, so that slow drifts of the machine affect all alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import socket
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query

from bpflab import libbpf, testrun
from bpflab.attach import attach, attach_tc, attach_xdp, detach_tc, detach_xdp
from bpflab.course.labs import BPF_TOOLS
from bpflab.programs import BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, Program, load, load_raw
from bpflab.topology import Topology, in_netns
from bpflab.verdicts import TC_ACT_OK, XDP_PASS

TIMING_REPEAT = 200_000  # enough runs for the timer's own cost to vanish in the mean
EMPTY_VERDICT = {"xdp": XDP_PASS, "tc": TC_ACT_OK}
PROG_TYPE = {"xdp": BPF_PROG_TYPE_XDP, "tc": BPF_PROG_TYPE_SCHED_CLS}
BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type


def ping_rtts(topology: Topology, count: int = 200, interval: float = 0.01, ipv6: bool = False,
              size: int = 56) -> list[float]:
    """Round-trip times in microseconds of `count` pings from the client to the server."""
    target = topology.server.ipv6 if ipv6 else topology.server.ipv4
    argv = ["ping", "-6" if ipv6 else "-4", "-n", "-c", str(count), "-i", str(interval), "-W", "1",
            "-s", str(size), target]
    done = subprocess.run(["ip", "netns", "exec", topology.client.netns, *argv], capture_output=True,
                          text=True, timeout=count * interval + 30, check=False)
    return [float(ms) * 1000 for ms in re.findall(r"time=([\d.]+) ms", done.stdout)]


def testrun_ns(prog_fd: int, frame: bytes, repeat: int = TIMING_REPEAT) -> float:
    """Mean ns per run of the program on `frame` (a path that must not change the frame)."""
    return testrun.run(prog_fd, frame, repeat=repeat).ns_per_run


def floor_ns(hook: str, frame: bytes, repeat: int = TIMING_REPEAT) -> float:
    """The harness's own cost: an empty program at `hook`, timed on the same frame."""
    fd = load_raw(PROG_TYPE[hook], EMPTY_VERDICT[hook], "empty")
    try:
        return testrun_ns(fd, frame, repeat)
    finally:
        os.close(fd)


def single_run_ns(prog_fd: int, frame: bytes, runs: int) -> float:
    """ns of one run, from `runs` calls of one run each: times a path that rewrites the frame (a
    reply), which repeats cannot, since test-run hands each repeat the frame as the last one left
    it. One call's time comes in the clock's steps (10 ns here), so their median jumps a whole
    step when the middle call moves; the interquartile mean (of the middle half) moves smoothly
    and still ignores the calls an interrupt or a cold cache slowed down."""
    return interquartile_mean([testrun.run(prog_fd, frame).ns_per_run for _ in range(runs)])


def interquartile_mean(values: list[float]) -> float:
    """The mean of the middle half of `values`: as robust to outliers as the median, finer."""
    ordered = sorted(values)
    middle = ordered[len(ordered) // 4: len(ordered) - len(ordered) // 4]
    return statistics.fmean(middle)


def single_run_floor_ns(hook: str, frame: bytes, runs: int) -> float:
    """The floor for `single_run_ns`: an empty program at `hook`, timed the same way."""
    fd = load_raw(PROG_TYPE[hook], EMPTY_VERDICT[hook], "empty")
    try:
        return single_run_ns(fd, frame, runs)
    finally:
        os.close(fd)


def query_rtts(topology: Topology, name: str, count: int = 300, rtype: str = "A") -> list[float]:
    """Microseconds per DNS query for `name`, one at a time, from the client namespace to the
    server's IPv4 address (dnspython: the same client every time, so servers compare fairly)."""
    query = dns.message.make_query(name, rtype, use_edns=False)
    times = []
    with in_netns(topology.client.netns):
        for _ in range(count):
            started = time.perf_counter()
            dns.query.udp(query, topology.server.ipv4, timeout=2)
            times.append((time.perf_counter() - started) * 1e6)
    return times


def percentiles_line(label: str, values: list[float], what: str = "queries") -> str:
    """`label  p50 .. µs  p90 .. µs  p99 .. µs  (n what)`: a distribution in one line."""
    p50, p90, p99 = (percentile(values, f) for f in (0.5, 0.9, 0.99))
    return f"{label:24} p50 {p50:6.0f} µs   p90 {p90:6.0f} µs   p99 {p99:6.0f} µs   ({len(values)} {what})"


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of `values` lie (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[None]:
    """Turn on the kernel's per-program run-time accounting for the block (it costs a little).

    Through BPF_ENABLE_STATS rather than the `kernel.bpf_stats_enabled` sysctl: the kernel keeps
    the accounting on while any such file descriptor is open, so two users at once cannot
    switch it off under each other, and a killed process turns it off by dying.
    """
    fd = libbpf.lib().bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS failed")
    try:
        yield
    finally:
        os.close(fd)


def bpf_stats(prog_fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded program, as the kernel accounts them."""
    fdinfo = Path(f"/proc/self/fdinfo/{prog_fd}").read_text()
    prog_id = re.search(r"prog_id:\s*(\d+)", fdinfo).group(1)
    shown = subprocess.run(["bpftool", "--json", "prog", "show", "id", prog_id], capture_output=True,
                           text=True, check=True)
    info = json.loads(shown.stdout)
    return info.get("run_time_ns", 0), info.get("run_cnt", 0)


@dataclass(frozen=True)
class Responder:
    """Something that answers the client's pings: put in place for its turn, taken away after."""

    name: str
    put_in_place: Callable[[], None]
    take_away: Callable[[], None]

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        self.put_in_place()
        try:
            yield
        finally:
            self.take_away()


def kernel_responder(topology: Topology, name: str = "kernel") -> Responder:
    """The server kernel's own echo, on for its turn."""
    return Responder(name, lambda: topology.kernel_echo(True), lambda: topology.kernel_echo(False))


def program_responder(name: str, program: Program, topology: Topology) -> Responder:
    """`program` attached alone to the server's interface for its turn, by fd: it stays loaded,
    its maps and counters with it, from one turn to the next."""
    netns, ifname = topology.server.netns, topology.server.ifname
    if program.hook == "xdp":
        return Responder(name, lambda: attach_xdp(netns, ifname, program.fd),
                         lambda: detach_xdp(netns, ifname))
    return Responder(name, lambda: attach_tc(netns, ifname, program.fd, program.name),
                     lambda: detach_tc(netns, ifname))


@dataclass
class Rounds:
    """What `ping_rounds` measured, per responder."""

    rtts: dict[str, list[list[float]]]  # each round's round trips (µs); [] for a turn not taken
    counted: dict[str, Counter] = field(default_factory=dict)  # how much each counter grew in its turns
    silent: set[str] = field(default_factory=set)  # answered nothing in a whole turn: asked no more

    def all(self, name: str) -> list[float]:
        """Every round trip of one responder, all rounds together."""
        return [rtt for chunk in self.rtts[name] for rtt in chunk]


def ping_rounds(topology: Topology, responders: list[Responder], rounds: int, pings: int,
                interval: float = 0.002, counters: Callable[[], dict[str, int]] | None = None) -> Rounds:
    """In each round each responder in turn answers `pings` pings, alone (the kernel's echo off
    unless it is the one answering), in an order that rotates from round to round.

    `counters` (say, each program's reply counter) is read around every turn, so that the
    caller can check who really answered. A responder that answers nothing in a turn (a starter)
    is not waited for again.
    """
    topology.kernel_echo(False)
    result = Rounds({r.name: [] for r in responders}, {r.name: Counter() for r in responders})
    for number in range(rounds):
        shift = number % len(responders)
        for responder in responders[shift:] + responders[:shift]:
            if responder.name in result.silent:
                result.rtts[responder.name].append([])
                continue
            before = counters() if counters else {}
            with responder.turn():
                rtts = ping_rtts(topology, pings, interval)
            after = counters() if counters else {}
            result.rtts[responder.name].append(rtts)
            result.counted[responder.name].update({k: after[k] - before[k] for k in after})
            if not rtts:
                result.silent.add(responder.name)
    return result


def cpu_busy() -> float:
    """Seconds of CPU time spent busy (all CPUs), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed(work: Callable[[], float]) -> tuple[float, float]:
    """(the rate `work` reports, cores busy meanwhile): a rate is read beside what it cost."""
    busy, started = cpu_busy(), time.monotonic()
    rate = work()
    return rate, (cpu_busy() - busy) / (time.monotonic() - started)


GENERATOR = BPF_TOOLS / "dns_query_generator.c"  # the bench's own: not in the student release


def has_generator() -> bool:
    """Whether this copy of the course has the in-kernel load generator (a release has not)."""
    return GENERATOR.is_file()


def generated_answers_per_second(topology: Topology, frame: bytes, count: int,
                                 answer_port: int) -> tuple[float, float]:
    """(Answers per second, cores busy meanwhile) from UDP port `answer_port` to `count` copies
    of `frame` sent by the in-kernel load generator on the client's veth (`has_generator`).
    The answers are counted and dropped by an XDP program there, so the client's kernel spends
    nothing on them. Whatever answers (an XDP program on the server's veth, or the server
    behind it) is measured the same way; the server's veth must carry an XDP program: veth
    delivers frames sent with XDP_TX only to a peer that has one. The cores are those busy
    while the generator runs (its own included), not while its programs compile."""
    counter = load(BPF_TOOLS / "dns_reply_counter.c", "dns_reply_counter", "xdp",
                   cflags=(f"-DANSWER_PORT={answer_port}",))
    generator = load(GENERATOR, "dns_query_generator", "xdp",
                     cflags=(f"-DQUERY_LEN={len(frame)}",))
    try:
        table = generator.table("query")
        table[ctypes.c_int(0)] = table.Leaf.from_buffer_copy(frame)
        attach(counter, topology.client.netns, topology.client.ifname)
        with in_netns(topology.client.netns):
            ifindex = socket.if_nametoindex(topology.client.ifname)  # asked in the client's netns
            busy, started = cpu_busy(), time.monotonic()
            testrun.live_frames(generator.fd, frame, ifindex, count)
            elapsed = time.monotonic() - started
            cores = (cpu_busy() - busy) / elapsed
        return sum(counter.percpu_sums("replies").values()) / elapsed, cores
    finally:
        generator.close()
        counter.close()
        topology.add_peer_xdp()
