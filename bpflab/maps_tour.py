"""The maps tour (bpf/maps_tour.c): what each kind of BPF map, a tail call, a ring buffer event
and a trace_printk line cost per frame, measured by test-run in one run, beside their floors.

Two floors are measured in the same run as the stops: an empty program (the harness's own
cost) and `tour_parse_only` (the same parsing, no map), so that each stop's figure is the
price of its map and nothing else.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scapy.packet import raw

from bpflab import measure, packets, testrun
from bpflab.course.labs import BPF_DIR
from bpflab.processes import in_threads
from bpflab.programs import Compiled, Program, compile_source

TOUR = BPF_DIR / "maps_tour.c"
TOUR_REPEAT = 50_000  # runs per figure: the ring buffer (2 MiB) holds every event of two
TRACEFS = Path("/sys/kernel/tracing")
TRACE_LINES_MAX = 20  # lines of trace_pipe a reader is shown

# (name, entry function, what that kind is for), in the order they are shown.
STOPS = [
    ("parse only", "tour_parse_only", "the baseline: the same parsing, no map"),
    ("array", "tour_array", "small dense keys (a protocol number), shared by all CPUs: atomic adds"),
    ("per-CPU array", "tour_percpu_array", "the same, one copy per CPU: what fast paths count with"),
    ("hash", "tour_hash", "any key (an address), found by hashing; new keys inserted"),
    ("per-CPU hash", "tour_percpu_hash", "a hash with one value per CPU"),
    ("LRU hash", "tour_lru_hash", "a cache: when full, it forgets the least recently used key"),
    ("tail call", "tour_tail_call", "a jump into another program (a prog array), then a per-CPU count"),
    ("ring buffer", "tour_ringbuf", "one event record to user space, in order across CPUs"),
    ("trace_printk", "tour_printk", "one line of text to the trace buffer: debugging only"),
]


@dataclass
class Cost:
    name: str
    purpose: str
    ns: float  # mean ns per run, one CPU running it
    above_floor: float  # above an empty program's
    above_parsing: float  # above tour_parse_only's: the map's own price
    every_cpu_above_parsing: float = 0.0  # the same with every CPU running it at once


class Tour:
    """The tour's programs, loaded from one compiled module, with the tail call's slot filled."""

    def __init__(self) -> None:
        self.compiled: Compiled = compile_source(TOUR, "xdp")
        self.programs: dict[str, Program] = {}
        try:
            for _, entry, _ in STOPS:
                self.programs[entry] = self.compiled.load(entry, owns_module=False)
            target = self.compiled.load("tour_next_stage", owns_module=False)
            self.programs["tour_next_stage"] = target
            self.compiled.bpf[b"next_stage"][ctypes.c_int(0)] = ctypes.c_int(target.fd)
            self.events_seen = 0
            self.compiled.bpf[b"events"].open_ring_buffer(self._count)
        except BaseException:
            self.close()
            raise

    def _count(self, _ctx: object, _data: object, _size: int) -> int:
        self.events_seen += 1
        return 0

    def costs(self, repeat: int = TOUR_REPEAT) -> list[Cost]:
        """Every stop's ns per run on one UDP frame, beside the floors of the same run; then
        with every CPU running the stop at once, where shared entries bounce between caches."""
        frame = raw(packets.udp_v4())
        floor = measure.floor_ns("xdp", frame, repeat)
        measured = {entry: measure.testrun_ns(self.programs[entry].fd, frame, repeat)
                    for _, entry, _ in STOPS}
        together = {}
        for _, entry, _ in STOPS:  # the CPUs share the runs: as many events in all as above
            together[entry] = on_every_cpu(self.programs[entry].fd, frame, max(1, repeat // len(cpus())))
            self.events()  # empty the ring buffer between stops, so that no event is dropped
        parsing, parsing_together = measured["tour_parse_only"], together["tour_parse_only"]
        return [Cost(name, purpose, measured[entry], measured[entry] - floor, measured[entry] - parsing,
                     together[entry] - parsing_together)
                for name, entry, purpose in STOPS]

    def events(self) -> int:
        """Ring buffer events received by user space so far."""
        self.compiled.bpf.ring_buffer_consume()
        return self.events_seen

    def close(self) -> None:
        for program in self.programs.values():
            program.close()
        self.programs.clear()
        self.compiled.bpf.cleanup()

    def __enter__(self) -> Tour:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpus() -> list[int]:
    """The CPUs this process may run on (a container's or a taskset's, not the machine's)."""
    return sorted(os.sched_getaffinity(0))


def on_every_cpu(fd: int, frame: bytes, repeat: int) -> float:
    """Mean ns per run while one thread per CPU (pinned to it) runs the program at once."""
    results: list[float] = []

    def run_on(cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # this thread only: test-run runs on the caller's CPU
        results.append(testrun.run(fd, frame, repeat=repeat).ns_per_run)

    in_threads(run_on, cpus())
    return sum(results) / len(results)


def ensure_tracefs() -> Path:
    """The trace buffer's files, mounted where every systemd machine has them if they are not."""
    if not os.path.ismount(TRACEFS):
        subprocess.run(["mount", "-t", "tracefs", "tracefs", str(TRACEFS)], check=True)
    return TRACEFS


def trace_lines(limit: int = TRACE_LINES_MAX) -> list[str]:
    """Lines waiting in trace_pipe, read without waiting: at most `limit` are kept.

    trace_pipe is the whole machine's, and reading consumes: two readers split the lines.
    """
    fd = os.open(ensure_tracefs() / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
    chunks, total = [], 0
    try:
        while total < 1 << 20:  # read at most 1 MiB: enough to see that lines came
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    return [line for line in lines if line.strip()][:limit]


def plot(costs: list[Cost]):
    """A bar per stop: ns per frame above the parsing baseline."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(8, 3.5))
    stops = costs[1:]
    ax.barh([c.name for c in stops], [c.above_parsing for c in stops], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("ns per frame above the same parsing without a map (test-run, mean)")
    ax.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure
