"""Lab measure: reading the figures of one recorded `make bench` run.

The truth of each question is computed here from the same recorded run the student reads
(labs/measure/bench.json), so re-recording the run moves the checks with it; the answer key's
own numbers (answer_keys/measure_answers.toml) must then be updated, and the reference
test in tests/test_grader.py says so. The "why" questions are graded by the hidden suite.
"""

from __future__ import annotations

import json
import statistics

from questions import expect_choice, expect_number

from bpflab.course.labs import LABS_DIR
from bpflab.measure import percentile
from grader.checks import points

LAB = "measure"
RUN = json.loads((LABS_DIR / LAB / "bench.json").read_text())
RTT = RUN["rtt_us"]
QPS = {source: entry["qps"] for source, entry in RUN["qps"].items()}
PLOT_READING = 0.15  # reading a log-scale CDF by eye
TABLE_READING = 0.05  # the table prints the figures
RATIO_READING = 0.10  # two bars (labelled) divided


def figure(prefix: str) -> dict:
    """The recorded figure whose name starts with `prefix`."""
    return next(f for f in RUN["figures"] if f["name"].startswith(prefix))


@points(2)
def test_q1_kernel_p90_rtt(answers: dict) -> None:
    """Question 1: the kernel's 90th-percentile ping round trip, read off the CDF."""
    expect_number(answers, "kernel_p90_us", 1, percentile(RTT["kernel"], 0.9), PLOT_READING,
                  "Find 0.9 on the vertical axis, go across to the kernel's curve, then down; the "
                  "time axis is logarithmic.")


@points(2)
def test_q2_xdp_fraction_within_20us(answers: dict) -> None:
    """Question 2: the fraction of the XDP echo's pings back within 20 µs, read off the CDF."""
    # ping reports whole µs, so the CDF steps up at 20 itself: below or at the step both count.
    xdp = RTT["XDP echo"]
    within = (sum(rtt < 20 for rtt in xdp) / len(xdp), sum(rtt <= 20 for rtt in xdp) / len(xdp))
    expect_number(answers, "xdp_within_20us", 2, within, PLOT_READING,
                  "Go up from 20 µs to the XDP echo's curve, then across: a fraction, between 0 and 1.")


@points(2)
def test_q3_highest_median(answers: dict) -> None:
    """Question 3: which responder has the highest median round trip."""
    slowest = max(RTT, key=lambda responder: statistics.median(RTT[responder]))
    expect_choice(answers, "highest_median", 3, slowest, tuple(RTT),
                  "Compare where the three curves cross 0.5: the one furthest right is the slowest.")


@points(2)
def test_q4_tc_echo_above_floor(answers: dict) -> None:
    """Question 4: the TC echo's IPv4 reply in ns above the TC floor, from the table."""
    row = figure("TC echo v4 reply")
    expect_number(answers, "tc_echo_above_floor_ns", 4, row["value"] - row["baseline"], TABLE_READING,
                  "Take the TC echo v4 row of the table: its value less its baseline (the floor).")


@points(2)
def test_q5_bpf_stats_over_testrun(answers: dict) -> None:
    """Question 5: bpf_stats' mean run time under pings over test-run's, for the XDP echo."""
    expect_number(answers, "xdp_stats_over_testrun", 5, figure("xdp-icmp ns per run")["ratio"],
                  RATIO_READING, "Take the xdp-icmp bpf_stats row: its value over its baseline.")


@points(2)
def test_q6_dnsperf_xdp_over_nsd(answers: dict) -> None:
    """Question 6: the XDP fast path's queries per second over NSD's, both under dnsperf."""
    expect_number(answers, "dnsperf_xdp_over_nsd", 6,
                  QPS["XDP fast path, dnsperf"] / QPS["NSD, dnsperf"], RATIO_READING,
                  "Divide the XDP bar measured with dnsperf by NSD's.")


@points(2)
def test_q7_generator_over_dnsperf(answers: dict) -> None:
    """Question 7: the in-kernel generator's rate over dnsperf's, both against the XDP fast path."""
    expect_number(answers, "generator_over_dnsperf", 7,
                  QPS["XDP fast path, in-kernel generator"] / QPS["XDP fast path, dnsperf"],
                  RATIO_READING, "Divide the in-kernel generator's bar by the XDP bar measured with "
                  "dnsperf.")
