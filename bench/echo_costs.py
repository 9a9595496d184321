"""Figures of the ICMP echo references, printed (never asserted): run as root from the venv.

    .venv/bin/python bench/echo_costs.py

For each hook: the test-run floor (an empty program), the validation path (a request with a
damaged ICMP checksum: every check runs, then the frame is passed, so the buffer stays the
same across repeats), the reply path under real pings (kernel.bpf_stats_enabled), and the
fuzzers' figures (100,000 frames by test-run, 10,000 over the veth).
"""

from __future__ import annotations

import sys
import time

from scapy.packet import raw

from bpflab import fuzz, measure, packets, testrun
from bpflab.attach import attach
from bpflab.course.labs import GRADER_TESTS, load_lab
from bpflab.oracles import echo
from bpflab.programs import load
from bpflab.topology import Topology
from bpflab.wire import Wire

sys.path.insert(0, str(GRADER_TESTS))
from echo_suite import FUZZ_FRAMES, PASS, WIRE_FUZZ_FRAMES, fuzz_seeds


def damaged_request() -> bytes:
    frame = bytearray(raw(packets.icmp_echo_v4(56)))
    frame[36] ^= 0xFF
    return bytes(frame)


def fuzz_testrun(program, hook: str) -> str:
    started, replies, refused = time.monotonic(), 0, 0
    for frame in fuzz.frames(fuzz_seeds(), FUZZ_FRAMES, seed=2026):
        try:
            replies += testrun.run(program.fd, frame).verdict not in PASS[hook]
        except testrun.Refused:
            refused += 1
    return (f"{FUZZ_FRAMES} frames by test-run in {time.monotonic() - started:.1f} s: {replies} replies, "
            f"{refused} refused by the harness")


def fuzz_wire(topo: Topology) -> str:
    valid, received, started = set(), [], time.monotonic()
    macs = bytes.fromhex(topo.server.mac.replace(":", "") + topo.client.mac.replace(":", ""))
    with Wire(topo.client.netns, topo.client.ifname) as wire:
        for i, frame in enumerate(fuzz.frames(fuzz_seeds(), WIRE_FUZZ_FRAMES, seed=2027)):
            frame = macs + frame[12:]
            wire.send(frame)
            if reply := echo.quick_reply(frame, packets.SERVER_IPV4, packets.SERVER_IPV6):
                valid.add(reply)
            if i % 500 == 499:
                received += wire.receive(quiet=0.0)
        received += wire.receive(quiet=0.5)
    answered = sum(frame in valid for frame in received)
    return (f"{WIRE_FUZZ_FRAMES} frames over the veth in {time.monotonic() - started:.1f} s: "
            f"{len(valid)} distinct valid requests, {answered} right replies received")


def main() -> None:
    frame = damaged_request()
    for lab_id in ("xdp-icmp", "tc-icmp"):
        lab = load_lab(lab_id)
        program = load(lab.reference, lab.entry, lab.hook)
        echo.configure(program, packets.SERVER_IPV4, packets.SERVER_IPV6)
        floor, cost = measure.floor_ns(lab.hook, frame), measure.testrun_ns(program.fd, frame)
        print(f"{lab.id}: test-run floor {floor:.0f} ns; validation path {cost:.0f} ns "
              f"({cost - floor:+.0f} ns above the floor)", flush=True)
        print(f"{lab.id}: {fuzz_testrun(program, lab.hook)}", flush=True)
        with Topology() as topo:
            attach(program, topo.server.netns, topo.server.ifname)
            topo.kernel_echo(False)
            with measure.bpf_stats_enabled():
                before = measure.bpf_stats(program.fd)
                rtts = measure.ping_rtts(topo, 1000, 0.002)
                after = measure.bpf_stats(program.fd)
            runs = after[1] - before[1]
            print(f"{lab.id}: reply path under ping: {(after[0] - before[0]) / max(runs, 1):.0f} ns per run "
                  f"over {runs} runs; RTT p50 {measure.percentile(rtts, 0.5):.0f} us, "
                  f"p99 {measure.percentile(rtts, 0.99):.0f} us", flush=True)
            print(f"{lab.id}: {fuzz_wire(topo)}", flush=True)
        program.close()


if __name__ == "__main__":
    main()
