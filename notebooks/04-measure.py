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
# The seed report measured its servers with the min/avg/max of a few pings, and timed its DNS
# function with prints in the path. Neither says much: a few pings show the scheduler, not the
# server, and a print costs more than the lookup it times. This notebook measures the course's
# reference servers properly, with the runtime's `bpflab.bench` (the same code as `make bench`,
# here with short runs):
#
# 1. in-kernel cost by BPF_PROG_TEST_RUN, as ns above the harness's floor, and the trap of the
#    buffer that is not reset between repeats;
# 2. cost under real traffic, from the kernel's own accounting (`bpf_stats`);
# 3. latency: ping round trips for the kernel, XDP and TC echo, interleaved, as CDFs;
# 4. throughput: the XDP DNS fast path against NSD and the Python server, with dnsperf and with
#    an in-kernel load generator;
# 5. the graded part: questions on reading one recorded run's plots and table.
#
# It measures your own programs from labs 1-3 (the references, in the course's repository).

# %%
import json

import matplotlib.pyplot as plt

from bpflab import bench, dns_answers, dns_records, echo, measure, testrun
from bpflab.labs import load_lab
from bpflab.programs import XDP_VERDICTS

SIZES = bench.SHORT  # make bench uses bench.FULL: ten times the samples
programs = {lab: bench.load_program(lab) for lab in ("xdp-icmp", "tc-icmp", "xdp-dns")}
for program in programs.values():
    echo.configure(program)
dns_answers.load_map(programs["xdp-dns"], dns_records.load())
for lab in bench.not_answering(programs):  # a release measures your programs, from labs 1-3
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
print("so a mean over many repeats of a hit times the *pass* path, not the answer.")

# %% [markdown]
# Two honest ways out: time a path that leaves the frame alone (a miss) over many repeats, or
# time the answer **one run per call** and take the median of many calls, against a floor (an
# empty program at the same hook) timed the same way. `bench.testrun_costs` does both:

# %%
costs = bench.testrun_costs(programs, SIZES)
for figure in costs:
    print(f"{figure.name:62} {figure.value:6.0f} ns  floor {figure.baseline:5.0f}  "
          f"= {figure.value - figure.baseline:+5.0f} ns   target {figure.target}")

# %% [markdown]
# ## 2 and 3 · Latency under real pings, and bpf_stats
#
# Three responders take turns on one topology, in rounds, so that whatever else the machine
# does falls on all of them alike: the kernel's own echo, the XDP echo, the TC echo.
# Meanwhile the kernel accounts each program's run time (`bpf_stats`).

# %%
samples, stats = bench.rtts(programs, SIZES)
fig, ax = plt.subplots(figsize=(7, 4))
bench.plot_rtt_cdf(ax, samples)
plt.show()
for responder, values in samples.items():
    p50, p90, p99 = (measure.percentile(values, f) for f in (0.5, 0.9, 0.99))
    print(f"{responder:9} p50 {p50:5.0f} µs  p90 {p90:5.0f} µs  p99 {p99:6.0f} µs  ({len(values)} pings)")
for lab, (ns, runs) in stats.items():
    print(f"{lab}: {ns / max(runs, 1):.0f} ns per run over {runs} runs (bpf_stats)")

# %% [markdown]
# What dominates on veth? The responders' own cost is well under a microsecond (above), yet a
# round trip takes tens of microseconds: it is `ping` itself, a process woken up to send and
# to receive, and the softirq work of the veth pair on both sides. The three CDFs lie close
# together, which is the honest answer to the report's question: on a veth, where the
# answer comes from hardly shows in a ping.
#
# ## 4 · Throughput: XDP against NSD and Python
#
# dnsperf (a user-space client) against the XDP fast path, NSD and the Python server; then the
# fast path fed by an in-kernel load generator: test-run's live-frames mode sends copies of a
# query out of the client's veth, and an XDP program there counts the answers and drops them.

# %%
qps = bench.dns_throughput(programs["xdp-dns"], SIZES)
fig, ax = plt.subplots(figsize=(7, 3))
bench.plot_qps(ax, qps)
plt.show()
for name, (value, cores) in qps.items():
    print(f"{name:38} {value:12,.0f} q/s   {cores:.1f} cores busy")
for program in programs.values():
    program.close()

# %% [markdown]
# Reading the plot: dnsperf gives a figure for the XDP fast path not far above NSD's, because
# the client side is the bottleneck: dnsperf's threads, and the kernel's socket and packet
# work for every query sent and every answer received, on the same cores as the server, cost
# far more per query than the XDP answer. Only the in-kernel generator, which skips sockets
# and packet buffers at both ends, shows what the fast path can do. The Python server is
# limited by one interpreter. `make bench` prints these figures with the targets as ratios.

# %% [markdown]
# ## 5 · The graded questions: one recorded run
#
# Your figures above are your machine's and change from run to run. The lab's questions are
# about one recorded `make bench` run instead, the same for everybody: `labs/measure/bench.json`,
# drawn here with the same functions. Answer them in `labs/measure/measure_answers.toml`, then
# check questions 1-7 with `make check LAB=measure`.

# %%
measure_lab = load_lab("measure")
recorded = json.loads((measure_lab.folder / "bench.json").read_text())
fig, (rtt_ax, qps_ax) = plt.subplots(2, 1, figsize=(8, 9))
bench.plot_rtt_cdf(rtt_ax, recorded["rtt_us"])
bench.plot_qps(qps_ax, bench.recorded_qps(recorded), recorded["cpus"])
fig.tight_layout()
plt.show()
print(f"recorded {recorded['when']} on {recorded['cpus']} cores, Linux {recorded['kernel']}\n")
print(bench.table(bench.recorded_figures(recorded)))
