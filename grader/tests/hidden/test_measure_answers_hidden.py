"""Instructor-only part of lab measure: the "why" questions, against the answer key.

The key is the lab's reference (answer_keys/measure_answers.toml), which the student release
leaves out, as it does this folder. A wrong choice is explained once grades are published.
"""

from __future__ import annotations

import tomllib

import pytest
from questions import expect_choice

from bpflab.course.labs import Lab
from grader.checks import points

LAB = "measure"
CHOICES = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def key(lab: Lab) -> dict:
    return tomllib.loads(lab.reference.read_text(encoding="utf-8"))


@points(2)
def test_q8_the_load_generator_limits_dnsperf(answers: dict, key: dict) -> None:
    """Question 8: what caps the XDP fast path's rate under dnsperf."""
    expect_choice(answers, "dnsperf_limit", 8, key["dnsperf_limit"], CHOICES,
                  "The client side is the bottleneck: dnsperf's threads and the kernel's socket and "
                  "packet work for every query and answer share the two cores with the server. The "
                  "in-kernel generator, which skips sockets at both ends, got about 13 times more "
                  "answers out of the same program.")


@points(2)
def test_q9_repeats_time_the_pass_path(answers: dict, key: dict) -> None:
    """Question 9: which path a mean over many test-run repeats of a hit times."""
    expect_choice(answers, "repeats_time", 9, key["repeats_time"], CHOICES,
                  "Test-run hands each repeat the frame as the previous run left it: after the first "
                  "answer the frame is that answer (addresses swapped, QR = 1), which the program "
                  "passes at its first check.")


@points(2)
def test_q10_ping_dominates_veth_round_trips(answers: dict, key: dict) -> None:
    """Question 10: what makes up most of a ping round trip on veth."""
    expect_choice(answers, "veth_rtt", 10, key["veth_rtt"], CHOICES,
                  "The responder costs well under a microsecond and veth has no wire; what is left is "
                  "ping waking up, its system calls, and the softirq work on each end.")


@points(2)
def test_q11_cold_caches_under_pings(answers: dict, key: dict) -> None:
    """Question 11: why a run costs more under pings than under test-run."""
    expect_choice(answers, "stats_vs_testrun", 11, key["stats_vs_testrun"], CHOICES,
                  "One ping every 2 ms, with other work in between, finds caches and branch "
                  "predictors cold; test-run calls the program on the same frame over and over.")
