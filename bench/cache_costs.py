"""Figures of the xdp-cache reference, printed (never asserted): run as root from the venv.

    .venv/bin/python bench/cache_costs.py

The cache's rows of `make bench` alone (bpflab.tools.bench.cache_figures, full sizes), in 10 s
instead of a minute:
1. ns per GET by BPF_PROG_TEST_RUN, beside the XDP floor (an empty program, same frame): a hit
   (the frame is rewritten into the reply: one run per call, the interquartile mean of many
   calls, the floor timed the same way) and a miss (passed: the mean of many repeats).
2. GETs answered per second for one key, sent by the in-kernel load generator: by the cache at
   XDP, and by memcached alone (one worker thread), each with the cores busy while the generator
   runs (its own core included: on a 2-core machine both runs fill both cores, and the ratio
   per core is about the ratio of the rates). BMC's anchor: 18 times on 8 cores; this lab's
   goal: 10 times per core.
3. Hit rate for GETs of 10,000 keys drawn with Zipf's law (0.99), with a cache of 1,024 entries,
   beside the best any cache of that size could do (the keys asked most, known in advance).
"""

from __future__ import annotations

from bpflab.tools.bench import FULL, cache_figures
from bpflab.tools.bench_report import table

if __name__ == "__main__":
    print(table(cache_figures(FULL)))
