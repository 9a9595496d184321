# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 4 · Measuring eBPF servers
#
# Two common ways to measure a server say little: the min/avg/max of a few pings shows the
# scheduler, not the server, and a print in the path to time a function costs more than the
# lookup it times. This notebook measures the course's servers properly, with the runtime's
# `bpflab.tools.bench` (the course's full benchmark, `python -m bpflab.tools.bench`, here with short runs):
#
# 1. in-kernel cost by BPF_PROG_TEST_RUN, as ns above the harness's floor, and the trap of the
#    buffer that is not reset between repeats;
# 2. cost under real traffic, from the kernel's own accounting (`bpf_stats`);
# 3. latency: ping round trips for the kernel, XDP and TC echo, interleaved, as CDFs;
# 4. throughput: the XDP DNS fast path against NSD and the Python server, with dnsperf (and,
#    in the course's repository, with an in-kernel load generator);
# 5. the graded part: questions on reading one recorded run's plots and table.
#
# It measures your own programs from labs 1-3 (the references, in the course's repository).

# %%
import json

import matplotlib.pyplot as plt

from bpflab import measure, testrun
from bpflab.course.labs import load_lab
from bpflab.oracles import dns_answers, dns_records, echo
from bpflab.programs import XDP_VERDICTS
from bpflab.tools import bench, bench_report

SIZES = bench.SHORT  # the full benchmark uses bench.FULL: ten times the samples
programs = {lab: bench.load_program(lab) for lab in ("xdp-icmp", "tc-icmp", "xdp-dns")}
for program in programs.values():
    echo.configure(program)
dns_answers.load_map(programs["xdp-dns"], dns_records.load())
late = bench.not_answering(programs)
for lab in late:  # a release measures your programs, from labs 1-3
    print(f"Your {lab} program does not answer yet: its figures below time what it does instead "
          "(passing). Finish that lab for figures that mean something.")

# %% [markdown]
# ## 1 · In-kernel cost, and the buffer that is not reset
#
# `BPF_PROG_TEST_RUN` runs a program `repeat` times on one frame and reports the mean time per
# run. But it hands each repeat the frame **as the previous run left it**. A DNS hit turns the
# query into an answer; the second run then sees the answer it wrote (addresses and ports
# swapped, QR = 1) and passes it at its first check. Ask for two repeats of a hit and look at
# the verdict:

# %%
hit = dns_answers.query_frame("www.lab.example")
once, twice = testrun.run(programs["xdp-dns"].fd, hit), testrun.run(programs["xdp-dns"].fd, hit, repeat=2)
print("1 repeat: ", XDP_VERDICTS[once.verdict], "| 2 repeats:", XDP_VERDICTS[twice.verdict])
if "xdp-dns" in late:
    print("Your xdp-dns program passes even the first run: finish lab 3 to see the trap.")
else:
    print("so a mean over many repeats of a hit times the *pass* path, not the answer.")

# %% [markdown]
# Two honest ways out: time a path that leaves the frame alone (a miss) over many repeats, or
# time the answer **one run per call** and average the middle half of many calls (the
# interquartile mean: the clock ticks in 10 ns steps, and a median would jump a whole step),
# against a floor (an empty program at the same hook) timed the same way.
# `bench.testrun_costs` does both:

# %%
costs = bench.testrun_costs(programs, SIZES)
for figure in costs:
    print(f"{figure.name:62} {figure.value:6.0f} ns  floor {figure.baseline:5.0f}  "
          f"= {figure.value - figure.baseline:+5.0f} ns   target {figure.target}")

# %% [markdown]
# ## 2 and 3 · Latency under real pings, and bpf_stats
#
# Three responders take turns on one topology, in rounds, so that whatever else the machine
# does falls on all of them alike: the kernel's own echo, the XDP echo, the TC echo (in the
# programs' turns the kernel's echo is off, so only the program can answer).
# Meanwhile the kernel accounts each program's run time (`bpf_stats`).
#
# The plot is one CDF per responder that answered: for each round-trip time on the x axis
# (µs, log scale), the fraction of that responder's pings answered within it. A curve further
# left is faster; the median is where a curve crosses 0.5, the tail is its top. A program that
# does not answer yet has no curve: its pings went unanswered.

# %%
samples, stats = bench.rtts(programs, SIZES)
answered = {responder: values for responder, values in samples.items() if values}
fig, ax = plt.subplots(figsize=(7, 4))
bench_report.plot_rtt_cdf(ax, answered)
plt.show()
for responder, values in samples.items():
    if not values:
        print(f"{responder:9} no replies: none of the {SIZES.pings} pings of its first turn was answered, "
              "so it was not asked again")
        continue
    p50, p90, p99 = (measure.percentile(values, f) for f in (0.5, 0.9, 0.99))
    print(f"{responder:9} p50 {p50:5.0f} µs  p90 {p90:5.0f} µs  p99 {p99:6.0f} µs  ({len(values)} pings)")
for lab, (ns, runs) in stats.items():
    print(f"{lab}: {ns / max(runs, 1):.0f} ns per run over {runs} runs (bpf_stats)")

# %% [markdown]
# What dominates on veth? The responders' own cost is a microsecond or two at most (above: by
# test-run, and by `bpf_stats` under these pings), yet a round trip takes tens of
# microseconds: it is `ping` itself, a process woken up to send and to receive, and the
# softirq work of the veth pair on both sides. The CDFs (three, once your echo programs
# answer) lie within a few microseconds of each other, and which one leads changes from run
# to run: that is the honest answer to the question "which hook answers fastest?". On a veth,
# where the answer comes from hardly shows in a ping.
#
# ## 4 · Throughput: XDP against NSD and Python
#
# dnsperf (a user-space client) against the XDP fast path, NSD and the Python server. In the
# course's repository two more figures follow: the fast path and NSD fed by the same in-kernel
# load generator, test-run's live-frames mode sending copies of a query out of the client's
# veth, where an XDP program counts the answers and drops them. The student release leaves the
# bench's own tools out, this generator with them: there the cell says so and measures the
# other three, and the recorded run in part 5 has the generator's figure for the fast path.
#
# The plot has one bar per server and load generator: the queries answered per second (log
# scale), labelled with the CPU cores busy meanwhile, out of all the machine's.

# %%
qps = bench.dns_throughput(programs["xdp-dns"], SIZES)
if "xdp-dns" in late:  # every query went through to the Python server behind it
    qps = {name.replace("XDP fast path", "passed by your XDP program to Python"): value
           for name, value in qps.items()}
fig, ax = plt.subplots(figsize=(7, 3))
bench_report.plot_qps(ax, qps)
plt.show()
for name, (value, cores) in qps.items():
    print(f"{name:46} {value:12,.0f} q/s   {cores:.1f} cores busy")
for program in programs.values():
    program.close()

# %% [markdown]
# Reading the plot: dnsperf gives a figure for the XDP fast path not far above NSD's, because
# the client side is the bottleneck: dnsperf's threads, and the kernel's socket and packet
# work for every query sent and every answer received, on the same cores as the server, cost
# far more per query than the XDP answer. Only the in-kernel generator, which skips sockets
# and packet buffers at both ends, shows what the fast path can do (in part 5's plot if not in
# yours); fed the same frames, NSD answers about a tenth as many per busy core, behind the
# kernel's UDP stack and a socket. The Python server is limited by one interpreter. (While
# your xdp-dns program answers nothing, its bar is the Python server too, with every query
# passed to it.) The full
# benchmark, `python -m bpflab.tools.bench`, measures the same with longer runs and prints each
# figure beside its baseline and target, as in part 5's table.

# %% [markdown]
# ## 5 · The graded questions: one recorded run
#
# Your figures above are your machine's and change from run to run. The lab's questions are
# about one recorded run of the full benchmark instead, the same for everybody:
# `labs/measure/bench.json`, drawn here with the same functions (top: the round trips as in
# part 3; bottom: the throughput as in part 4, the in-kernel generator included), then its
# table: each figure, the baseline measured in the same run, their difference and ratio, and
# the target. Answer the questions in `labs/measure/measure_answers.toml`, then check questions
# 1-7 with `make check LAB=measure`.

# %%
measure_lab = load_lab("measure")
recorded = json.loads((measure_lab.folder / "bench.json").read_text())
fig, (rtt_ax, qps_ax) = plt.subplots(2, 1, figsize=(8, 9))
bench_report.plot_rtt_cdf(rtt_ax, recorded["rtt_us"])
bench_report.plot_qps(qps_ax, bench_report.recorded_qps(recorded), recorded["cpus"])
fig.tight_layout()
plt.show()
print(f"recorded {recorded['when']} on {recorded['cpus']} cores, Linux {recorded['kernel']}\n")
print(bench_report.table(bench_report.recorded_figures(recorded)))
