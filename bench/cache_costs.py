"""Figures of the xdp-cache reference, printed (never asserted): run as root from the venv.

    .venv/bin/python bench/cache_costs.py

1. ns per GET by BPF_PROG_TEST_RUN, beside the XDP floor (an empty program, same frame): a hit
   (the frame is rewritten into the reply: one run per call, the interquartile mean of many
   calls, the floor timed the same way) and a miss (passed: the mean of many repeats).
2. GETs answered per second for one key, sent by the in-kernel load generator: by the cache at
   XDP, and by memcached alone (one worker thread), each with the cores busy while the generator
   runs (its own core included: on a 2-core machine both runs fill both cores, and the ratio
   per core is the ratio of the rates), and the ratio per core (BMC's anchor: 18 times on 8
   cores; this lab's goal: 10 times per core).
3. Hit rate for GETs of 10,000 keys drawn with Zipf's law (0.99), with a cache of 1,024 entries,
   beside the best any cache of that size could do (the keys asked most, known in advance).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bpflab import measure
from bpflab.cache import CacheLab, put
from bpflab.course.labs import load_lab
from bpflab.oracles import memcached as oracle
from bpflab.parts import load_parts

SINGLE_RUNS = 20_000
GENERATED_FRAMES = 2_000_000
ZIPF_KEYS, ZIPF_GETS = 10_000, 50_000


def cost_line(what: str, cost: float, floor: float) -> str:
    return f"{what:36} {cost:5.0f} ns  floor {floor:3.0f}  above {cost - floor:4.0f}"


def main() -> None:
    lab = load_lab("xdp-cache")
    parts = load_parts(lab.reference, lab)
    try:
        xdp = parts["xdp_cache"]
        put(xdp, b"bench:hit", oracle.hit_reply(b"bench:hit", b"v" * 100)[oracle.FRAME.size:])
        hit, miss = oracle.get_frame(b"bench:hit"), oracle.get_frame(b"bench:mis")  # keys of one length
        cost, floor = measure.single_run_ns(xdp.fd, hit, SINGLE_RUNS), measure.single_run_floor_ns(
            "xdp", hit, SINGLE_RUNS)
        print(cost_line("GET hit (100-byte value, answered)", cost, floor))
        cost, floor = measure.testrun_ns(xdp.fd, miss), measure.floor_ns("xdp", miss)
        print(cost_line("GET miss (passed to memcached)", cost, floor))
        programs = [parts[entry] for entry in lab.entries]
        with CacheLab(Path(tempfile.mkdtemp()) / "memcached.log") as net:
            rates = net.throughput(programs, GENERATED_FRAMES)
            for name, (qps, cores) in rates.items():
                print(f"{name:16} {qps:10,.0f} GETs/s on {cores:.2f} cores  ({qps / cores:10,.0f} per core)")
            (xdp_qps, xdp_cores), (mc_qps, mc_cores) = rates["XDP cache hits"], rates["memcached alone"]
            print(f"per core, the cache answers {(xdp_qps / xdp_cores) / (mc_qps / mc_cores):.1f} times what "
                  f"memcached does (in all, {xdp_qps / mc_qps:.1f} times)")
            with net.attached(*programs):
                rate, best = net.zipf_hit_rate(xdp, ZIPF_KEYS, ZIPF_GETS)
            size = xdp.table("cache").max_entries
            print(f"Zipf(0.99), {ZIPF_KEYS:,} keys, {ZIPF_GETS:,} GETs, cache of {size}: {rate:.1%}; "
                  f"the best a cache of that size could do {best:.1%}")
    finally:
        parts.close()


if __name__ == "__main__":
    main()
