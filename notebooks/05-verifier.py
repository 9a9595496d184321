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
# # Lab 5 · The verifier gym
#
# Every BPF program goes through the kernel's **verifier** before it runs. The verifier walks
# every path through the program and refuses it if one of them could read outside the packet,
# dereference NULL, loop for ever, overflow the 512-byte stack or call a helper the hook does not
# offer. For most people who write eBPF servers, this is the hardest part of the work: the
# messages are precise, and hard to read the first time.
#
# This notebook has three parts:
#
# 1. **The gym**: nine small programs in `labs/verifier/verifier_gym.c`, each refused for one
#    common reason. You fix them one at a time, reading what the feedback says.
# 2. **The maps tour**: what each kind of BPF map costs per frame, measured.
# 3. **Printing from the fast path**: `bpf_trace_printk`, `trace_pipe`, and what a line costs.

# %%
from IPython.display import Code, display

from bpflab.course.labs import load_lab
from bpflab.gym import load_gym
from bpflab.maps_tour import TOUR, Tour, plot, trace_lines

# %% [markdown]
# ## 1 · The gym
#
# `load_gym()` compiles the file once and verifies each exercise's entry function on its own. An
# exercise the compiler refuses is set aside with its explanation, and the rest is compiled
# again: one exercise that does not compile yet holds back none of the others. Nothing here
# stops the notebook: a refusal is a result, printed.

# %%
lab = load_lab("verifier")
source = lab.source()  # your labs/verifier/verifier_gym.c in the release, else the reference
gym = load_gym(source)
for exercise in gym.exercises:
    print(gym.report(exercise.name).splitlines()[0])

# %% [markdown]
# Each report below has the same three parts: **what** was refused (the verifier's or the
# compiler's own words), **where** (`at file:line:` followed by the code of your line), and a
# **hint** (what usually fixes this class of refusal). After a change to the file, run the cell
# above again, then the exercise's cell.
#
# ### Exercise 1 · bounds
#
# A packet read is allowed only if, on the same path, the verifier has seen a check that the
# bytes end before `ctx->data_end`. `pkt(off=16,r=14)` in a message means: 16 bytes into the
# packet, 14 proven readable.

# %%
print(gym.report("bounds"))

# %% [markdown]
# ### Exercise 2 · null
#
# A map lookup returns `map_value_or_null` until the program tests it: even when the key
# exists, even for an array. A new key has no entry: insert it with `update()`.

# %%
print(gym.report("null"))

# %% [markdown]
# ### Exercise 3 · loop
#
# Since Linux 5.3 the verifier accepts loops it can see the end of: it walks them turn by turn,
# so the bound must be a constant, not a length read from the packet (to the verifier, up to
# 65535). A named limit, then `break` at the real length.

# %%
print(gym.report("loop"))

# %% [markdown]
# ### Exercise 4 · stack
#
# A BPF program has 512 bytes of stack, all functions together. Clang's BPF back end refuses a
# larger frame outright (the compiler stops: the runtime catches that in a child process, so
# this notebook survives it). Large buffers live in a map: a per-CPU array of one entry is the
# usual scratch space.

# %%
print(gym.report("stack"))

# %% [markdown]
# ### Exercise 5 · uninit
#
# Root may pass uninitialised stack to a helper: the program loads, then looks up whatever key
# the stack held. The course's checks trace which stack bytes are written on every path to a
# map lookup, and warn.

# %%
print(gym.report("uninit"))

# %% [markdown]
# ### Exercise 6 · offset
#
# `data + offset` with an offset read from the packet: the verifier ignores a `data_end` check
# on a pointer whose offset could reach 64 KiB. Bound the offset with a constant first, and keep
# clang from checking a copy of it (`barrier_var()`).

# %%
print(gym.report("offset"))

# %% [markdown]
# ### Exercise 7 · helper
#
# Each hook offers its own helpers: `bpf_skb_*` are for socket buffers (TC), `bpf_xdp_*` for
# XDP. At XDP the whole frame is in `data .. data_end` already.

# %%
print(gym.report("helper"))

# %% [markdown]
# ### Exercise 8 · verdict
#
# The verifier does not check what an XDP program returns. A value that is no XDP action is
# taken as `XDP_ABORTED`: the frame is dropped, and only a tracepoint says why.

# %%
print(gym.report("verdict"))

# %% [markdown]
# ### Exercise 9 · signature
#
# The verifier walks every path, up to a million instructions. Each branch whose outcome is
# used later (here, in a mask compared at the end) doubles the paths after it: 24 of them make
# 16 million. Decide as you go and return early, and the paths stay few.

# %%
print(gym.report("signature"))

# %% [markdown]
# When every exercise is accepted, check yourself with `make check LAB=verifier`: it runs real
# frames through each one.

# %%
gym.close()

# %% [markdown]
# ## 2 · The maps tour: what a lookup costs
#
# BPF offers several kinds of map, each suited to a job: an array for a fixed set of counters
# or settings by index, a hash for keys you do not know in advance (an address, a name), their
# per-CPU variants for counters every CPU updates, an LRU hash for a cache that forgets its
# least recently used keys when full, a program array for tail calls, a ring buffer for events
# sent to user space. `bpf/maps_tour.c` uses each once for its job, counting
# frames, plus a tail call and a ring buffer event:

# %%
display(Code(TOUR.read_text(), language="c"))

# %% [markdown]
# Each stop runs 50,000 times on one UDP frame with `BPF_PROG_TEST_RUN`, first on one CPU, then
# on every CPU at once. The figure is ns per frame above `tour_parse_only`, the same parsing
# with no map, measured in the same run: the map's own price.
#
# The table gives both columns; the chart below it draws the first, one bar per stop, its
# length the ns per frame the stop adds to the parsing on one CPU. A bar left of zero is a
# stop too cheap to tell from the parsing, measured a little below it; the longest bar by far,
# `trace_printk`, is part 3's subject.

# %%
with Tour() as tour:
    costs = tour.costs()
    events = tour.events()
print(f"{'stop':14} {'ns/frame':>9} {'one CPU':>9} {'all CPUs':>9}   what it is for")
for cost in costs:
    print(f"{cost.name:14} {cost.ns:9.0f} {cost.above_parsing:+9.0f} "
          f"{cost.every_cpu_above_parsing:+9.1f}   {cost.purpose}")
print(f"ring buffer events received by user space: {events}")
figure = plot(costs)

# %% [markdown]
# Read the figures against each other, not as absolutes (they depend on the CPU):
#
# - **Arrays are an index, hashes a search.** An array lookup is a bounds check and an add; a
#   hash lookup hashes the key and walks a bucket, and an insert allocates.
# - **Per-CPU is what fast paths count with.** On one CPU a shared array's atomic add costs
#   little. With every CPU adding to the same entry, the entry's cache line moves between CPUs
#   at each add: compare the two columns (the more CPUs, the larger the gap).
# - **A tail call is cheap**, a few ns: programs can be split into stages.
# - **A ring buffer event** costs tens of ns, the price of getting data to user space.

# %% [markdown]
# ## 3 · Printing from the fast path
#
# `bpf_trace_printk()` writes a line to the kernel's trace buffer, read from
# `/sys/kernel/tracing/trace_pipe` (the runtime mounts it if the machine has not). It is the
# quickest way to see what a program does, and the figure above says why it never stays in a
# fast path. The lines the tour printed:

# %%
for line in [line for line in trace_lines(200) if "tour:" in line][:5]:
    print(line.strip())
printk = next(cost for cost in costs if cost.name == "trace_printk")
print(f"\none line costs {printk.above_parsing:.0f} ns per frame: at 10 Mpps that is "
      f"{printk.above_parsing * 10e6 / 1e9:.1f} CPUs busy printing")

# %% [markdown]
# `trace_pipe` is one for the whole machine, and reading it consumes the lines: two readers
# split them. For anything that must reach user space reliably, use a ring buffer.
