"""The ICMP echo server's graded behaviour, shared by the XDP and TC labs.

`test_xdp_icmp_echo.py` and `test_tc_icmp_echo.py` name their lab and import these tests; the
hook decides only which verdicts mean "reply" and "pass". Every pass-through test first checks
that the program answers a plain request: passing everything is what the starter does, and it
earns nothing.

One file past 350 lines on purpose: it is one lab's whole graded behaviour, read top to bottom
as the grading table of the handout is, and split it would send a reader between files.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPOption_NOP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw, raw

from bpflab import fuzz, packets, testrun
from bpflab.course.labs import Lab
from bpflab.oracles import echo
from bpflab.packets import CLIENT_IPV4, CLIENT_IPV6, SERVER_IPV4, SERVER_IPV6, describe
from bpflab.programs import Program
from bpflab.topology import Topology
from bpflab.verdicts import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_UNSPEC, XDP_PASS, XDP_TX, verdict
from bpflab.wire import Wire
from grader.checks import expect, fail, points

REPLY = {"xdp": XDP_TX, "tc": TC_ACT_REDIRECT}  # TC_ACT_REDIRECT: what bpf_redirect() returns
PASS = {"xdp": {XDP_PASS}, "tc": {TC_ACT_OK, TC_ACT_UNSPEC}}
V4_SIZES = (0, 1, 56, 1000, 1472)  # ICMP payload bytes; 1472 fills a 1500-byte MTU
V6_SIZES = (0, 1, 56, 1000, 1452)
FUZZ_FRAMES = 100_000
WIRE_FUZZ_FRAMES = 10_000
FUZZ_SEED = 2026


@pytest.fixture(scope="module")
def server(program: Program) -> Program:
    """The program, told which addresses are its own."""
    echo.configure(program, SERVER_IPV4, SERVER_IPV6)
    return program


def expect_reply(server: Program, hook: str, frame: Packet | bytes, what: str) -> None:
    """The program must answer `frame` with exactly the reply a correct server sends."""
    data = raw(frame)
    expected = echo.expected_reply(data, SERVER_IPV4, SERVER_IPV6)
    result = testrun.run(server.fd, data)
    expect(
        result.verdict == REPLY[hook],
        f"Sent {what}: {describe(data)}\nThe program returned {verdict(hook, result.verdict)}; "
        f"an echo request for the server must be answered ({verdict(hook, REPLY[hook])}).",
    )
    expect(
        echo.same_reply(result.packet, expected),
        f"Sent {what}: {describe(data)}\nReplied: {describe(result.packet)}\n"
        f"Expected: {describe(expected)}\n{first_difference(result.packet, expected)}",
    )


def first_difference(got: bytes, expected: bytes) -> str:
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            return f"First wrong byte at offset {i}: 0x{a:02x} instead of 0x{b:02x}."
    return f"The reply is {len(got)} bytes long instead of {len(expected)}."


def run_unless_refused(server: Program, frame: bytes) -> testrun.RunResult | None:
    """Test-run `frame`, or None where the kernel's harness refuses it (see testrun.Refused):
    TC frames cut inside their IP header, which only the veth fuzzer can deliver."""
    try:
        return testrun.run(server.fd, frame)
    except testrun.Refused:
        return None


def expect_pass(server: Program, hook: str, frame: Packet | bytes, what: str) -> None:
    """The program must hand `frame` to the kernel, unchanged."""
    data = raw(frame)
    result = run_unless_refused(server, data)
    if result is None:
        return
    expect(
        result.verdict in PASS[hook] and result.packet == data,
        f"Sent {what}: {describe(data)}\nThe program returned {verdict(hook, result.verdict)}"
        f"{'' if result.packet == data else ' and changed the frame'}; it must pass it to the kernel "
        "untouched.",
    )


def expect_serving(server: Program, hook: str) -> None:
    """Pass-through checks mean something only for a program that answers a plain request."""
    expect_reply(server, hook, packets.icmp_echo_v4(), "a plain ICMPv4 echo request (the sanity check)")


# -- unit layer: BPF_PROG_TEST_RUN on crafted frames --------------------------------------------


@points(3)
def test_echo_v4_replies(server: Program, lab: Lab) -> None:
    """ICMPv4 echo requests of every size up to the MTU get the exact reply (addresses, TTL, checksums)."""
    for size in V4_SIZES:
        expect_reply(
            server, lab.hook, packets.icmp_echo_v4(size, seq=size), f"an echo request, {size}-byte payload"
        )


@points(3)
def test_echo_v6_replies(server: Program, lab: Lab) -> None:
    """ICMPv6 echo requests of every size up to the MTU get the exact reply."""
    for size in V6_SIZES:
        expect_reply(
            server,
            lab.hook,
            packets.icmp_echo_v6(size, seq=size),
            f"an ICMPv6 echo request, {size}-byte payload",
        )


@points(2)
def test_passes_other_traffic(server: Program, lab: Lab) -> None:
    """Other protocols and other ICMP types go to the kernel untouched."""
    expect_serving(server, lab.hook)
    v4 = packets.ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4)
    v6 = packets.ether() / IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6)
    cases = {
        "UDP": packets.udp_v4(),
        "TCP": packets.tcp_v4(),
        "UDP over IPv6": packets.udp_v6(),
        "an ICMP echo reply": v4 / ICMP(type=0, id=1, seq=1) / packets.payload(56),
        "an ICMP port unreachable": v4 / ICMP(type=3, code=3) / IP(src=SERVER_IPV4, dst=CLIENT_IPV4) / UDP(),
        "an ICMP timestamp request": v4 / ICMP(type=13),
        "an ICMP echo request with code 1": v4 / ICMP(type=8, code=1),
        "an ICMPv6 neighbour solicitation": v6 / ICMPv6ND_NS(tgt=SERVER_IPV6),
        "an ARP request": packets.arp_request(),
    }
    for what, frame in cases.items():
        expect_pass(server, lab.hook, frame, what)


@points(1)
def test_passes_requests_not_for_the_server(server: Program, lab: Lab) -> None:
    """Echo requests for other addresses, or from sources the kernel rejects, go to the kernel."""
    expect_serving(server, lab.hook)
    icmp = ICMP(id=1, seq=1) / packets.payload(8)
    icmp6 = ICMPv6EchoRequest(id=1, seq=1)
    cases = {
        "an echo request for 192.0.2.99": packets.ether() / IP(src=CLIENT_IPV4, dst="192.0.2.99") / icmp,
        "an echo request to the broadcast address": packets.ether()
        / IP(src=CLIENT_IPV4, dst="192.0.2.255")
        / icmp,
        "an ICMPv6 echo request for 2001:db8::99": packets.ether()
        / IPv6(src=CLIENT_IPV6, dst="2001:db8::99")
        / icmp6,
        "an ICMPv6 echo request to all nodes (ff02::1)": packets.ether()
        / IPv6(src=CLIENT_IPV6, dst="ff02::1")
        / icmp6,
        "an echo request from 0.0.0.0": packets.ether() / IP(src="0.0.0.0", dst=SERVER_IPV4) / icmp,
        "an echo request from a multicast source": packets.ether()
        / IP(src="224.0.0.1", dst=SERVER_IPV4)
        / icmp,
        "an echo request for another host's MAC": Ether(src=packets.CLIENT_MAC, dst="02:00:00:00:00:99")
        / IP(src=CLIENT_IPV4, dst=SERVER_IPV4)
        / icmp,
        "an echo request to the broadcast MAC": Ether(src=packets.CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=CLIENT_IPV4, dst=SERVER_IPV4)
        / icmp,
        "an ICMPv6 echo request from a multicast source": packets.ether()
        / IPv6(src="ff02::1", dst=SERVER_IPV6)
        / icmp6,
    }
    # Martian sources (the kernel drops them) and the ambiguous ones some kernels drop: passed,
    # the kernel that runs decides (bpf/include/parsing.h; tests/test_echo.py checks the kernel).
    for source in ("0.1.2.3", "127.0.0.1", SERVER_IPV4):
        cases[f"an echo request from {source}"] = packets.ether() / IP(src=source, dst=SERVER_IPV4) / icmp
    for source in ("::", "::1", "::ffff:192.0.2.1", SERVER_IPV6):
        cases[f"an ICMPv6 echo request from {source}"] = (packets.ether() / IPv6(src=source, dst=SERVER_IPV6)
                                                          / icmp6)
    for what, frame in cases.items():
        expect_pass(server, lab.hook, frame, what)


@points(2)
def test_passes_fragments_options_vlan_and_extension_headers(server: Program, lab: Lab) -> None:
    """Fragments, IP options, VLAN tags and IPv6 extension headers are left to the kernel."""
    expect_serving(server, lab.hook)
    icmp = ICMP(id=1, seq=1) / packets.payload(56)
    cases = {
        "a first fragment (MF set)": packets.ether()
        / IP(src=CLIENT_IPV4, dst=SERVER_IPV4, flags="MF")
        / icmp,
        "a later fragment (offset 8)": packets.ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4, frag=8) / icmp,
        "an echo request with IP options": packets.ether()
        / IP(src=CLIENT_IPV4, dst=SERVER_IPV4, options=[IPOption_NOP()] * 4)
        / icmp,
        "a VLAN-tagged echo request": Ether(src=packets.CLIENT_MAC, dst=packets.SERVER_MAC)
        / Dot1Q(vlan=7)
        / IP(src=CLIENT_IPV4, dst=SERVER_IPV4)
        / icmp,
        "an ICMPv6 echo request behind a hop-by-hop header": packets.ether()
        / IPv6(src=CLIENT_IPV6, dst=SERVER_IPV6)
        / IPv6ExtHdrHopByHop()
        / ICMPv6EchoRequest(id=1, seq=1),
    }
    for what, frame in cases.items():
        expect_pass(server, lab.hook, frame, what)


@points(2)
def test_passes_damaged_frames(server: Program, lab: Lab) -> None:
    """Frames with a wrong checksum or a lying header are passed, never answered."""
    expect_serving(server, lab.hook)
    request, request6 = packets.icmp_echo_v4(), packets.icmp_echo_v6()
    cases = {
        "an echo request with a wrong ICMP checksum": packets.damaged(request, ICMP, "chksum"),
        "an echo request with a wrong IP header checksum": packets.damaged(request, IP, "chksum"),
        "an echo request with a damaged payload": packets.damaged(request, Raw, "load"),
        "an ICMPv6 echo request with a wrong checksum": packets.damaged(request6, ICMPv6EchoRequest, "cksum"),
        "an ICMPv6 echo request with a damaged payload": packets.damaged(request6, ICMPv6EchoRequest, "data"),
        "an IP header of version 5": packets.with_field(request, IP, "version", 5),
        "an IPv4 header of 16 bytes (ihl 4)": packets.with_field(request, IP, "ihl", 4),
        # Lengths 20 bytes beyond the frame: IPv4's total length, IPv6's payload length.
        "an echo request whose IP length runs past the frame": packets.length_changed(request, IP, "len", 20),
        "an ICMPv6 echo request whose payload length runs past the frame":
            packets.length_changed(request6, IPv6, "plen", 20),
    }
    for what, frame in cases.items():
        expect_pass(server, lab.hook, frame, what)


@points(2)
def test_passes_truncated_frames(server: Program, lab: Lab) -> None:
    """An echo request cut short at any length is passed untouched."""
    expect_serving(server, lab.hook)
    for request in (raw(packets.icmp_echo_v4(24)), raw(packets.icmp_echo_v6(24))):
        for frame in packets.truncations(request):
            expect_pass(
                server, lab.hook, frame, f"an echo request cut to {len(frame)} of {len(request)} bytes"
            )


# -- network layer: attached on the server's veth, real traffic from the client netns ----------


@pytest.fixture(scope="module")
def serving(server: Program, attached: Program, topology: Topology) -> Topology:
    """The program attached with the server kernel's own echo off: only the program can answer."""
    assert (topology.server.ipv4, topology.server.ipv6) == (SERVER_IPV4, SERVER_IPV6)
    topology.kernel_echo(False)
    return topology


@points(2)
def test_ping_answered_by_the_program(server: Program, serving: Topology) -> None:
    """With the kernel's echo off, `ping` gets all 20 replies, and the program counted them."""
    before = echo.replies(server)[0]
    result = serving.ping(count=20)
    counted = echo.replies(server)[0] - before
    expect(
        result.received == 20,
        f"ping sent 20 echo requests with the kernel's own echo off; "
        f"{result.received} replies came back.\n{result.output}",
    )
    expect(counted == 20, f"The program's `replies` map counted {counted} ICMPv4 replies for 20 pings.")


@points(1)
def test_ping6_answered_by_the_program(server: Program, serving: Topology) -> None:
    """The same over IPv6: `ping -6` gets all 20 replies from the program."""
    before = echo.replies(server)[1]
    result = serving.ping(count=20, ipv6=True)
    counted = echo.replies(server)[1] - before
    expect(result.received == 20, f"ping -6 got {result.received} of 20 replies.\n{result.output}")
    expect(counted == 20, f"The program's `replies` map counted {counted} ICMPv6 replies for 20 pings.")


@points(1)
def test_full_size_pings_answered(server: Program, serving: Topology) -> None:
    """Pings that fill the 1500-byte MTU are answered over IPv4 and IPv6."""
    for ipv6, size in ((False, 1472), (True, 1452)):
        result = serving.ping(count=5, ipv6=ipv6, size=size)
        expect(
            result.received == 5,
            f"ping{' -6' if ipv6 else ''} -s {size}: {result.received} of 5 replies.\n{result.output}",
        )


@points(1)
def test_reply_on_the_wire_is_exact(serving: Topology) -> None:
    """What arrives back at the client is, byte for byte, the reply scapy builds for the request."""
    with Wire(serving.client.netns, serving.client.ifname) as wire:
        for what, request in (
            ("ICMPv4", packets.icmp_echo_v4(100, seq=7)),
            ("ICMPv6", packets.icmp_echo_v6(100, seq=7)),
        ):
            data = raw(request)  # the topology's veths carry packets' MACs
            expected = echo.expected_reply(data, SERVER_IPV4, SERVER_IPV6)
            came = wire.exchange(data, lambda frame, expected=expected: echo.same_reply(frame, expected))
            got = [frame for frame in came if echo.same_reply(frame, expected)]
            expect(
                len(got) == 1,
                f"Sent an {what} echo request over the veth: {describe(data)}\n"
                f"expected exactly one reply {describe(expected)}, got {len(got)}.",
            )


@points(1)
def test_frames_for_other_hosts_get_no_reply_on_the_wire(server: Program, serving: Topology) -> None:
    """Over the veth, a VLAN-tagged request and one for another MAC get no reply (as from the kernel)."""
    icmp = ICMP(id=3, seq=3) / packets.payload(56)
    cases = {
        "a VLAN-tagged echo request (VLAN 7, which the server has no interface for)": Ether(
            src=packets.CLIENT_MAC, dst=packets.SERVER_MAC
        )
        / Dot1Q(vlan=7)
        / IP(src=CLIENT_IPV4, dst=SERVER_IPV4)
        / icmp,
        "an echo request for another host's MAC": Ether(src=packets.CLIENT_MAC, dst="02:00:00:00:00:99")
        / IP(src=CLIENT_IPV4, dst=SERVER_IPV4)
        / icmp,
    }
    with Wire(serving.client.netns, serving.client.ifname) as wire:
        plain = raw(packets.icmp_echo_v4(56))
        expect(
            any(echo.is_echo_reply(reply) for reply in wire.exchange(plain, echo.is_echo_reply)),
            "A plain echo request sent over the veth got no reply: this check needs a working server.",
        )
        fence = packets.icmp_echo_v4(56, ident=echo.FENCE_ID)  # sent after each case: its reply ends the wait
        for what, frame in cases.items():
            before = echo.replies(server)
            answers = [reply for reply in wire.unanswered(raw(frame), raw(fence), echo.is_fence_reply)
                       if echo.is_echo_reply(reply)]
            expect(
                not answers and echo.replies(server) == (before[0] + 1, before[1]),  # the fence's reply only
                f"Sent {what} over the veth: {describe(raw(frame))}\nThe program answered it "
                f"({describe(answers[0]) if answers else 'and counted a reply'}); the kernel would not.",
            )


@points(1)
def test_kernel_answers_what_the_program_passes(server: Program, serving: Topology) -> None:
    """Kernel echo on: a ping with IP options is passed by the program and answered by the kernel."""
    serving.kernel_echo(True)
    try:
        before = echo.replies(server)
        with_options = serving.ping(count=3, options=["-R"])  # record route: an IP option
        expect(
            with_options.received == 3,
            "ping -R (an IP option the program passes) got "
            f"{with_options.received} of 3 replies from the kernel.\n{with_options.output}",
        )
        expect(
            echo.replies(server) == before,
            "The program answered pings with IP options itself; it must leave them to the kernel.",
        )
        plain = serving.ping(count=3)
        expect(
            plain.received == 3 and echo.replies(server)[0] == before[0] + 3,
            "With the kernel's echo on too, the program must still be the one answering plain pings.",
        )
    finally:
        serving.kernel_echo(False)


# -- fuzzing --------------------------------------------------------------------------------------


def fuzz_seeds() -> list[bytes]:
    return (
        [raw(packets.icmp_echo_v4(size)) for size in (0, 8, 56, 200)]
        + [raw(packets.icmp_echo_v6(size)) for size in (0, 8, 56, 200)]
        + [raw(packets.udp_v4())]
    )


@points(2)
def test_fuzz_never_a_wrong_reply(server: Program, lab: Lab) -> None:
    """100,000 random and mutated frames by test-run: every reply is right, every pass untouched."""
    replied = 0
    for frame in fuzz.frames(fuzz_seeds(), FUZZ_FRAMES, seed=FUZZ_SEED):
        result = run_unless_refused(server, frame)
        if result is None:
            continue
        passed = result.verdict in PASS[lab.hook]
        if passed and result.packet == frame:
            continue
        expected = None if passed else echo.quick_reply(frame, SERVER_IPV4, SERVER_IPV6)
        right = result.verdict == REPLY[lab.hook] and echo.same_reply(result.packet, expected or b"")
        if not right:
            fail(  # the message is built only now: describing 100,000 frames would take a minute
                f"Fuzzing (seed {FUZZ_SEED}): for {frame.hex()}\n({describe(frame)}) the program returned "
                f"{verdict(lab.hook, result.verdict)} with {describe(result.packet)}; expected "
                f"{describe(expected) if expected else 'the frame passed untouched'}."
            )
        replied += 1
    expect(replied > 0, "The program answered none of the fuzzer's valid echo requests.")
    expect_serving(server, lab.hook)


@points(1)
def test_fuzz_over_the_veth(server: Program, serving: Topology) -> None:
    """10,000 fuzzed frames over the veth: no wrong reply arrives, and the server still answers."""
    sent: set[bytes] = set()
    with Wire(serving.client.netns, serving.client.ifname) as wire:
        received: list[bytes] = []
        for i, frame in enumerate(fuzz.frames(fuzz_seeds(), WIRE_FUZZ_FRAMES, seed=FUZZ_SEED + 1)):
            data = bytearray(frame)
            data[0:12] = bytes.fromhex(
                serving.server.mac.replace(":", "") + serving.client.mac.replace(":", "")
            )
            expected = echo.quick_reply(bytes(data), SERVER_IPV4, SERVER_IPV6)
            if wire.send(bytes(data)) and expected:
                sent.add(expected)
            if i % 500 == 499:
                received += wire.receive(quiet=0.0)
        received += wire.receive(quiet=0.5)
    wrong = [
        frame
        for frame in received
        if frame not in sent
        and echo.is_echo_reply(frame)
        and not any(echo.same_reply(frame, reply) for reply in sent if len(reply) == len(frame))
    ]
    expect(
        not wrong, f"{len(wrong)} wrong echo replies came back, e.g. {describe(wrong[0]) if wrong else ''}"
    )
    answered = sum(1 for frame in received if frame in sent)
    expect(answered > 0, f"None of the {len(sent)} valid echo requests among the fuzzed frames was answered.")
    after = serving.ping(count=5)
    expect(after.received == 5, f"After the fuzzing, ping got {after.received} of 5 replies.\n{after.output}")


