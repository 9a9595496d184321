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
# # Lab 3 · A DNS server's fast path at XDP
#
# The records of a zone sit in a BPF hash map; your XDP program answers A and AAAA queries for
# them in the driver hook and passes everything else to a user-space server with the same
# records. This notebook walks through:
#
# 1. the DNS wire format, with dnspython, beside the parser in C;
# 2. bounded loops and the verifier;
# 3. the maps, filled from Python;
# 4. `dig` answered by XDP, while the user-space server sees only what XDP passed;
# 5. what a query costs in the fast path, measured properly.
#
# It runs on `labs/xdp-dns/xdp_dns.c` if you have one (the student release), else on the
# reference. With the starter every cell runs, but XDP answers nothing.

# %% [markdown]
# ## Setup

# %%
import tempfile
from pathlib import Path

import dns.message
from IPython.display import Code, display

from bpflab import measure, testrun
from bpflab.attach import attach
from bpflab.course.labs import load_lab
from bpflab.oracles import dns_answers, dns_records, echo
from bpflab.packets import SERVER_IPV4, SERVER_IPV6, describe
from bpflab.programs import XDP_VERDICTS, load
from bpflab.services import dns_server
from bpflab.topology import Topology, run_in

lab = load_lab("xdp-dns")
records = dns_records.load()

# %% [markdown]
# ## 1 · A query on the wire
#
# A DNS message is a 12-byte header (ID, flags, four counts) and sections. The question is a
# name as labels (a length byte, then the bytes), ended by a zero byte, then a type and a class.
# dnspython builds one; the bytes are what your `read_name()` walks:

# %%
query = dns.message.make_query("WwW.Lab.Example", "A", use_edns=False)
wire = query.to_wire()
print(query)
print("header  ", wire[:12].hex(" "))
print("question", wire[12:].hex(" "))
print("labels  ", [wire[12:-4]])

# %% [markdown]
# The answer keeps the question as it was asked, case included, and points back at it
# (`0xC00C`: offset 12) instead of repeating the name. This is the course's oracle for the
# whole answer frame, rendered by dnspython from the records:

# %%
frame = dns_answers.query_frame("WwW.Lab.Example", "A")
answer = dns_answers.expected_answer(frame, records)
print(describe(frame), "\n->", describe(answer))
print(dns_answers.message_of(answer))

# %% [markdown]
# ## 2 · Bounded loops and the verifier
#
# The name loop runs at most `MAX_NAME_LEN` times; the verifier walks every iteration it can
# reach, so each bound is verification work. Here is the loop, and what the verifier did with
# the whole program: its length in BPF instructions, and the instructions the verifier
# **processed** proving it safe. The kernel keeps both for every loaded program
# (`bpf_prog_info`: `xlated_prog_len` and `verified_insns`); `program.instructions` and
# `program.verified_instructions` read them.

# %%
source = lab.source()
text = source.read_text()
start = text.index("static __always_inline int read_name")
display(Code(text[start : text.index("\n}\n", start) + 2], language="c"))
program = load(source, lab.entry, lab.hook)
length, processed = program.instructions, program.verified_instructions
print(f"loaded: {program.name}(), {length:,} BPF instructions long")
print(f"the verifier processed {processed:,} instructions to prove it safe: "
      f"{processed / length:.0f}x its length, {processed / 1_000_000:.1%} of the kernel's limit of 1,000,000")

# %% [markdown]
# The verifier does not read the program once, top to bottom: it follows every path through it,
# with what it knows at each point (how many bytes of the packet have been proven there, which
# registers hold what). Every turn of the name loop is walked again, with one more byte
# proven; every branch splits the walk in two, until a path reaches a state already proven
# safe and is cut short. So the count of instructions processed is many times the program's
# length (more than a hundred times, for the reference), and that count, not the length, is what
# the kernel limits: past 1,000,000 it refuses the program, however short. The loops' bounds
# weigh most: the name loop's `MAX_NAME_LEN` (128 bytes) and the EDNS options walk's
# `MAX_EDNS_OPTIONS` (8) multiply the paths; with `MAX_NAME_LEN` at 16, the reference is about
# as long and the verifier processes a fraction of the instructions. (With the starter, whose
# functions return at once, both numbers are small.)

# %% [markdown]
# ## 3 · The maps, filled from Python
#
# The runtime packs each record set as `struct dns_key` → `struct dns_rrset` (dns.h) and
# writes it with libbpf; `python -m bpflab dns-records` does the same for a running service.

# %%
echo.configure(program, SERVER_IPV4, SERVER_IPV6)
written, removed = dns_records.sync_map(program.table("records").map_fd, records)
print(f"{written} record sets in the map, {removed} stale removed")
for (name, rtype), addresses in records.rrsets.items():
    print(f"  {name!s:32} {rtype:5} {', '.join(addresses)}")
result = testrun.run(program.fd, frame)
print("test-run verdict:", XDP_VERDICTS.get(result.verdict, result.verdict),
      "| same as the oracle:", dns_answers.same_answer(result.packet, answer))

# %% [markdown]
# ## 4 · dig, answered by XDP
#
# The program goes on the server's veth, the user-space server starts in the server's
# namespace (stopped by its process id when the cell ends), and `dig` asks from the client.
# The user-space server's log shows only what XDP passed.

# %%
log = Path(tempfile.mkdtemp()) / "user-space.log"
with Topology() as topo:
    attach(program, topo.server.netns, topo.server.ifname)
    before = dns_answers.answers_sent(program)
    with dns_server.start(topo.server.netns, log, addresses=(SERVER_IPV4, SERVER_IPV6)) as userspace:
        asked = (["www.lab.example", "A"], ["MaNy.LaB.ExAmPlE", "A", "+noedns"],
                 ["nope.lab.example", "A"], ["www.lab.example", "MX"])
        for args in asked:
            dig = ["dig", "+tries=1", "+time=2", "+short", f"@{SERVER_IPV4}", *args]
            out = run_in(topo.client.netns, dig)
            print(f"dig {' '.join(args):32} -> {out.stdout.split() or '(no records)'}")
        # The server logs a query just after answering it: wait for a line per query XDP passed.
        passed = len(asked) - (dns_answers.answers_sent(program) - before)
        userspace.wait_until(lambda output: output.count("\nudp ") >= passed, timeout=2)
        print("\nuser-space server log:\n" + userspace.output())
        print(f"answered by XDP: {len(asked) - passed} of {len(asked)} queries")

# %% [markdown]
# ## 5 · What a query costs in the fast path
#
# A tempting way to time a fast path is from inside it, with prints along the way; but a
# print costs far more than the lookup it would time (see below). Measured properly:
# BPF_PROG_TEST_RUN, many repeats, beside the harness's floor (an empty XDP program). A miss
# (name not in the map) runs every check and passes, so its buffer stays the same between
# repeats; a hit changes the frame it is given (test-run does not reset it), so only the first
# repeat is a real hit. That is why the miss is the path timed here.

# %%
miss = dns_answers.query_frame("nope.lab.example", "A")
floor = measure.floor_ns("xdp", miss)
cost = measure.testrun_ns(program.fd, miss)
print(f"floor {floor:.0f} ns, miss path {cost:.0f} ns: {cost - floor:.0f} ns above the floor")
if XDP_VERDICTS.get(result.verdict) != "XDP_TX":
    print("Your program does not answer the held name yet (step 3): this is how long it takes "
          "to pass a query.")

# %% [markdown]
# ### What a print in the fast path costs
#
# Prints in a fast path slow the whole server down. Here is the same program with one
# `bpf_trace_printk` at the top of `xdp_dns()`, timed on the same path. (The line goes to the
# kernel's trace buffer, `/sys/kernel/tracing/trace_pipe`, whether anyone reads it or not.)

# %%
first_check = "\tif (!eth || !me || !eth_to_me(eth, me->mac))"
a_print = '\tbpf_trace_printk("xdp_dns: frame of %d bytes\\n", ctx->data_end - ctx->data);\n'
printing_text = text.replace(first_check, a_print + first_check, 1)
with tempfile.TemporaryDirectory() as folder:
    printing_source = Path(folder) / "xdp_dns.c"
    printing_source.write_text(printing_text)
    printing = load(printing_source, lab.entry, lab.hook)
echo.configure(printing, SERVER_IPV4, SERVER_IPV6)
dns_records.sync_map(printing.table("records").map_fd, records)
with_print = measure.testrun_ns(printing.fd, miss, repeat=20_000)
printing.close()
print(f"miss path without a print: {cost - floor:.0f} ns above the floor; "
      f"with one print: {with_print - floor:.0f} ns ({with_print / cost:.1f}x the whole program)")

# %% [markdown]
# ### End to end, done right
#
# Comparing servers by one `dig` each, or by the median of a handful, says little: over a
# veth most of a round trip is the client's own stack and the scheduler, and the server's part
# is small. Timing many queries of each kind from the client, answered by XDP (a held name) and
# by the user-space server (NXDOMAIN), shows both the difference and how little of the total
# it is. The program's own counter says who answered the held name: only the answers it
# counted came from the fast path.

# %%
with Topology() as topo:
    attach(program, topo.server.netns, topo.server.ifname)
    with dns_server.start(topo.server.netns, log, addresses=(SERVER_IPV4, SERVER_IPV6)):
        before = dns_answers.answers_sent(program)
        held_times = measure.query_rtts(topo, "www.lab.example")
        by_xdp = dns_answers.answers_sent(program) - before
        userspace_times = measure.query_rtts(topo, "nope.lab.example")
print(f"the held name: {by_xdp} of {len(held_times)} queries answered by the XDP fast path (its counter)")
if by_xdp == len(held_times):
    print(measure.percentiles_line("held name, XDP fast path", held_times))
elif by_xdp == 0:
    print("no answer came from the XDP fast path: your program passed every query, and the "
          "user-space server answered them all. Finish the lab to time the fast path.")
    print(measure.percentiles_line("held name, user space", held_times))
else:
    print(f"only some came from the fast path: these times mix {by_xdp} XDP answers with "
          f"{len(held_times) - by_xdp} from user space")
    print(measure.percentiles_line("held name, mixed", held_times))
print(measure.percentiles_line("NXDOMAIN, user space", userspace_times))
program.close()
