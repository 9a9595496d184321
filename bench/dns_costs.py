"""Figures of the XDP DNS reference, printed (never asserted): run as root from the venv.

    .venv/bin/python bench/dns_costs.py

ns per query by BPF_PROG_TEST_RUN, beside the XDP floor (an empty program, same frame):
- the pass path (a name not in the map: every check and the lookup run, then XDP_PASS, so the
  buffer stays the same), as the mean of 200,000 repeats;
- the hit path: an answer changes the frame, and test-run does not reset it between repeats
  (the second run would see a response and pass it). So hits are timed one run per call,
  20,000 calls, median, and the floor is timed the same way for a fair difference.
Then the fuzzer's figures: 100,000 frames, how many were valid queries for held names, answered
exactly, and how many answers were wrong.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from bpflab import fuzz, measure, testrun
from bpflab.course.labs import GRADER_TESTS, load_lab
from bpflab.oracles import dns_answers, dns_records, echo
from bpflab.packets import SERVER_IPV4, SERVER_IPV6
from bpflab.programs import BPF_PROG_TYPE_XDP, load, load_raw
from bpflab.verdicts import XDP_PASS

sys.path.insert(0, str(GRADER_TESTS))
from test_xdp_dns import FUZZ_FRAMES, FUZZ_SEED, fuzz_seeds

SINGLE_RUNS = 20_000


def single_run_median(fd: int, frame: bytes) -> float:
    return statistics.median(testrun.run(fd, frame).ns_per_run for _ in range(SINGLE_RUNS))


def main() -> None:
    lab = load_lab("xdp-dns")
    program = load(lab.reference, lab.entry, lab.hook)
    records = dns_records.load()
    echo.configure(program, SERVER_IPV4, SERVER_IPV6)
    dns_answers.load_map(program, records)
    miss = dns_answers.query_frame("nope.lab.example", "A")
    hits = {"A www (2 addresses)": dns_answers.query_frame("www.lab.example", "A"),
            "A many (8 addresses)": dns_answers.query_frame("many.lab.example", "A"),
            "AAAA www over IPv6, EDNS": dns_answers.query_frame("www.lab.example", "AAAA", ipv6=True,
                                                                edns=1232)}

    floor = measure.floor_ns("xdp", miss)
    passing = measure.testrun_ns(program.fd, miss)
    print(f"pass path (200,000 repeats): floor {floor:.0f} ns, program {passing:.0f} ns, "
          f"{passing - floor:+.0f} ns above the floor")
    empty = load_raw(BPF_PROG_TYPE_XDP, XDP_PASS, "empty")
    try:
        floor_single = single_run_median(empty, miss)
    finally:
        os.close(empty)
    print(f"one run per call ({SINGLE_RUNS:,} calls, median): floor {floor_single:.0f} ns")
    for name, frame in hits.items():
        cost = single_run_median(program.fd, frame)
        print(f"  hit, {name:28} {cost:5.0f} ns, {cost - floor_single:+.0f} ns above the floor")
    cost = single_run_median(program.fd, miss)
    print(f"  pass, {'name not held':28} {cost:5.0f} ns, {cost - floor_single:+.0f} ns above the floor")

    started, valid, right, wrong = time.monotonic(), 0, 0, 0
    for frame in fuzz.frames(fuzz_seeds(), FUZZ_FRAMES, seed=FUZZ_SEED):
        want = dns_answers.expected_answer(frame, records)
        result = testrun.run(program.fd, frame)
        if want is None:
            wrong += not (result.verdict == XDP_PASS and result.packet == frame)
            continue
        valid += 1
        ok = dns_answers.same_answer(result.packet, want) and dns_answers.udp_checksum_ok(result.packet)
        right += ok
        wrong += not ok
    print(f"fuzz: {FUZZ_FRAMES:,} frames in {time.monotonic() - started:.1f} s: {valid:,} valid queries for "
          f"held names, {right:,} answered exactly, {wrong} wrong (answers or passes)")
    program.close()


if __name__ == "__main__":
    main()
