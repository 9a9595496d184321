"""Measurements done right: distributions rather than one average, costs above a floor.

- `ping_rtts`: every reply's round-trip time from `ping`, for distributions and percentiles.
- `testrun_ns`: a program's in-kernel ns per run by BPF_PROG_TEST_RUN, and `floor_ns`, the
  same for an empty program at the same hook: report a program as ns above that floor.
  Test-run does not reset the packet between repeats, so time only a path that leaves the
  packet as it found it (a pass path), and say which. `single_run_ns` and
  `single_run_floor_ns` time a reply path instead, one run per call.
- `bpf_stats`: run time and count of a program under real traffic (with the kernel's run-time
  accounting on, `bpf_stats_enabled`), which does time the paths that rewrite the packet.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bpflab import libbpf, testrun
from bpflab.programs import BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, load_raw
from bpflab.topology import Topology

TIMING_REPEAT = 200_000  # enough runs for the timer's own cost to vanish in the mean
EMPTY_VERDICT = {"xdp": 2, "tc": 0}  # XDP_PASS, TC_ACT_OK
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
    """Median ns of `runs` calls of one run each: times a path that rewrites the frame (a reply),
    which repeats cannot, since test-run hands each repeat the frame as the last one left it."""
    return statistics.median(testrun.run(prog_fd, frame).ns_per_run for _ in range(runs))


def single_run_floor_ns(hook: str, frame: bytes, runs: int) -> float:
    """The floor for `single_run_ns`: an empty program at `hook`, timed the same way."""
    fd = load_raw(PROG_TYPE[hook], EMPTY_VERDICT[hook], "empty")
    try:
        return single_run_ns(fd, frame, runs)
    finally:
        os.close(fd)


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
