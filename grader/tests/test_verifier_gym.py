"""Lab 5, verifier: each exercise of the gym loads without warnings and does its job on real frames.

An exercise that the compiler or the verifier refuses fails its own test with the explanation,
and only its own. Behaviour is checked by BPF_PROG_TEST_RUN on frames built with scapy, so a
"fix" that deletes what the program does fails.
"""

from __future__ import annotations

import ctypes
import random

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw, raw

from bpflab import packets, testrun
from bpflab.gym import Gym
from bpflab.programs import Program
from bpflab.verdicts import XDP_DROP, XDP_PASS, verdict
from grader.checks import delta, expect, fail, points

LAB = "verifier"
MAX_SUM_BYTES, SNAP_LEN, POISON, MAX_UDP_LEN = 64, 600, 0xFF, 1480
ETH_P_EXPERIMENTAL = 0x88B5
SIG_BYTES, SIG_THRESHOLD, SIGNATURE = 24, 7, 0xABCDEF


def exercise(gym: Gym, name: str) -> Program:
    """The exercise's program; its refusal, or any warning about it, fails the test."""
    program = gym.program(name)  # raises the ProgramError: the test fails with its explanation
    warned = gym.warnings(name)
    if warned:
        fail("The program loads, but it will not do what it should:\n" + "\n".join(warned))
    return program


def verdict_of(program: Program, frame: Packet | bytes, want: int, why: str) -> None:
    data = raw(frame)
    result = testrun.run(program.fd, data)
    expect(result.verdict == want, f"Sent {packets.describe(data)}: the program returned "
           f"{verdict('xdp', result.verdict)}; expected {verdict('xdp', want)} ({why}).")


def udp4(dport: int = 53, body: bytes = b"", ip_options: bool = False) -> Packet:
    options = b"\x01\x01\x01\x00" if ip_options else []  # three NOPs and an end: a 24-byte header
    ip = IP(src=packets.CLIENT_IPV4, dst=packets.SERVER_IPV4, options=options)
    return packets.ether() / ip / UDP(sport=40000, dport=dport) / Raw(body)


def counts(program: Program, name: str) -> dict[int, int]:
    """A map's counters by key, per-CPU ones summed over CPUs."""
    try:
        table = program.table(name)
    except KeyError:
        fail(f"The program has no map called {name}: keep the map the starter declares.")
    return {k.value: sum(v) if isinstance(v, ctypes.Array) else v.value for k, v in table.items()}


@points(2)
def test_bounds(gym: Gym) -> None:
    """Exercise 1 (bounds): UDP to the discard port is dropped, IP options or not; the rest passes."""
    program = exercise(gym, "bounds")
    verdict_of(program, udp4(9), XDP_DROP, "a UDP datagram to port 9")
    verdict_of(program, udp4(9, ip_options=True), XDP_DROP, "port 9, after an IP header with options")
    verdict_of(program, udp4(53), XDP_PASS, "another port")
    verdict_of(program, packets.tcp_v4(9), XDP_PASS, "TCP, not UDP")
    verdict_of(program, raw(udp4(9))[:36], XDP_PASS, "cut short inside the UDP header")


@points(2)
def test_null(gym: Gym) -> None:
    """Exercise 2 (null): every frame is counted under its EtherType, new ones included, and passed."""
    program = exercise(gym, "null")
    before = counts(program, "ethertypes")
    frames = [packets.udp_v4(), packets.udp_v4(), packets.icmp_echo_v4(), packets.arp_request(),
              packets.arp_request(), packets.udp_v6()]
    for frame in frames:
        verdict_of(program, frame, XDP_PASS, "every frame is passed")
    changed = delta(before, counts(program, "ethertypes"))
    expect(changed == {0x0800: 3, 0x0806: 2, 0x86DD: 1}, "After 3 IPv4, 2 ARP and 1 IPv6 frames, "
           f"ethertypes changed by {({hex(k): v for k, v in changed.items()})}; expected "
           "{0x800: 3, 0x806: 2, 0x86dd: 1}: the first frame of a type must be counted too.")


@points(2)
def test_loop(gym: Gym) -> None:
    """Exercise 3 (loop): the payload's bytes are summed, the first 64 at most, and up to the frame's end."""
    program = exercise(gym, "loop")
    rng = random.Random(5)
    for size in (0, 1, 13, 63, 64, 65, 300):
        body = bytes(rng.randrange(256) for _ in range(size))
        verdict_of(program, udp4(body=body), XDP_PASS, "every frame is passed")
        got = program.table("payload_sum")[ctypes.c_int(0)].value
        want = sum(body[:MAX_SUM_BYTES])
        expect(got == want, f"For a payload of {size} bytes the sum is {got}; expected {want}, the sum "
               f"of its first {min(size, MAX_SUM_BYTES)} bytes.")
    cut = raw(udp4(body=bytes(range(1, 41))))[:-30]  # the length field says 40 bytes; 10 are there
    verdict_of(program, cut, XDP_PASS, "every frame is passed")
    got = program.table("payload_sum")[ctypes.c_int(0)].value
    expect(got == sum(range(1, 11)), f"For a datagram cut after 10 of its 40 payload bytes the sum is {got}; "
           f"expected {sum(range(1, 11))}: stop at the end of the frame.")


@points(2)
def test_stack(gym: Gym) -> None:
    """Exercise 4 (stack): the first 600 bytes of the last frame (or all of it) and its length are kept."""
    program = exercise(gym, "stack")
    for size in (700, 600, 60):
        frame = raw(packets.ether() / Raw(bytes(i % 251 for i in range(size - 14))))
        verdict_of(program, frame, XDP_PASS, "every frame is passed")
        snap = program.table("last_frame")[ctypes.c_int(0)]
        kept = min(size, SNAP_LEN)
        expect(snap.len == kept and bytes(snap.bytes)[:kept] == frame[:kept],
               f"After a frame of {size} bytes, last_frame holds {snap.len} bytes"
               f"{'' if bytes(snap.bytes)[:kept] == frame[:kept] else ' that differ from the frame'}; "
               f"expected its first {kept} bytes.")


@points(2)
def test_uninit(gym: Gym) -> None:
    """Exercise 5 (uninit): IPv4 frames count at 0, IPv6 at 1, others nowhere, and the key is always set."""
    program = exercise(gym, "uninit")
    before = counts(program, "families")
    for frame in [packets.udp_v4(), packets.tcp_v4(), packets.udp_v6(), packets.icmp_echo_v6(),
                  packets.udp_v6(), packets.arp_request()]:
        verdict_of(program, frame, XDP_PASS, "every frame is passed")
    changed = delta(before, counts(program, "families"))
    expect(changed == {0: 2, 1: 3}, f"After 2 IPv4, 3 IPv6 and 1 ARP frames, families changed by {changed}; "
           "expected {0: 2, 1: 3}.")


@points(2)
def test_offset(gym: Gym) -> None:
    """Exercise 6 (offset): a datagram (up to 1480 bytes) whose last byte is 0xFF is dropped; others pass."""
    program = exercise(gym, "offset")
    verdict_of(program, udp4(body=b"hello\xff"), XDP_DROP, "the last payload byte is 0xFF")
    verdict_of(program, udp4(body=bytes(1471) + b"\xff"), XDP_DROP, "a full-size datagram ending in 0xFF")
    verdict_of(program, udp4(body=b"hello\x00"), XDP_PASS, "the last byte is not 0xFF")
    verdict_of(program, udp4(body=b""), XDP_PASS, "no payload at all")
    lying = raw(udp4(body=b"\xff" * 40))[:-10]
    verdict_of(program, lying, XDP_PASS, "the length says more than the frame holds")


@points(2)
def test_helper(gym: Gym) -> None:
    """Exercise 7 (helper): frames of EtherType 0x88B5 are dropped; IPv4, IPv6 and ARP pass."""
    program = exercise(gym, "helper")
    experimental = Ether(src=packets.CLIENT_MAC, dst=packets.SERVER_MAC, type=ETH_P_EXPERIMENTAL)
    verdict_of(program, experimental / Raw(b"x" * 46), XDP_DROP, "EtherType 0x88B5")
    verdict_of(program, raw(experimental), XDP_DROP, "EtherType 0x88B5, a bare 14-byte header")
    others = (("IPv4", packets.udp_v4()), ("IPv6", packets.udp_v6()), ("ARP", packets.arp_request()))
    for name, frame in others:
        verdict_of(program, frame, XDP_PASS, name)


@points(2)
def test_verdict(gym: Gym) -> None:
    """Exercise 8 (verdict): ICMPv4 echo requests are dropped; replies, other protocols and ARP pass."""
    program = exercise(gym, "verdict")
    verdict_of(program, packets.icmp_echo_v4(), XDP_DROP, "an echo request")
    reply = packets.ether() / IP(src=packets.CLIENT_IPV4, dst=packets.SERVER_IPV4) / ICMP(type=0)
    verdict_of(program, reply, XDP_PASS, "an echo reply")
    verdict_of(program, packets.udp_v4(), XDP_PASS, "UDP")
    verdict_of(program, packets.arp_request(), XDP_PASS, "ARP")
    verdict_of(program, packets.ether() / IPv6() / TCP(), XDP_PASS, "IPv6")


def signed(bits: int) -> bytes:
    """SIG_BYTES bytes that match `bits`: byte k above the threshold exactly when bit k is set."""
    return bytes(200 if bits >> k & 1 else 3 for k in range(SIG_BYTES))


@points(2)
def test_signature(gym: Gym) -> None:
    """Exercise 9 (signature): the frames whose 24 bytes match the signature are dropped, all others pass."""
    program = exercise(gym, "signature")
    eth = Ether(src=packets.CLIENT_MAC, dst=packets.SERVER_MAC, type=ETH_P_EXPERIMENTAL)
    verdict_of(program, eth / Raw(signed(SIGNATURE) + b"tail"), XDP_DROP, "the signature matches")
    for k in (0, 11, 23):
        verdict_of(program, eth / Raw(signed(SIGNATURE ^ 1 << k) + b"tail"), XDP_PASS, f"byte {k} disagrees")
    verdict_of(program, raw(eth / Raw(signed(SIGNATURE)))[:-1], XDP_PASS, "the frame ends before 24 bytes")
