"""Lab xdp-dns: an authoritative DNS fast path at XDP, with a user-space server behind it.

Unit layer: BPF_PROG_TEST_RUN on crafted queries, answers compared byte for byte with
dnspython's rendering (bpflab.oracles.dns_answers). Network layer: dig and dnspython from the client
namespace, with the user-space server running in the server namespace, so that what the
program passes is still answered. Fuzzing: 100,000 frames, none answered wrongly. Every
pass-through test first checks that the program answers a plain query: passing everything is
what the starter does, and it earns nothing.

One file past 350 lines on purpose: it is the lab's whole graded behaviour, read top to bottom
as the handout's grading table is; the DNS knowledge it needs is in bpflab.oracles.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from bpflab import fuzz, measure, testrun
from bpflab.oracles import dns_answers, dns_records, echo
from bpflab.oracles.dns_answers import expected_answer, query_frame, same_answer
from bpflab.oracles.dns_records import Records
from bpflab.packets import (
    SERVER_IPV4,
    SERVER_IPV6,
    damaged,
    describe,
    fix_checksums,
    length_changed,
    truncations,
    with_field,
)
from bpflab.programs import Program
from bpflab.services import dns_server
from bpflab.services.netns_server import NetnsServer
from bpflab.topology import Topology, in_netns, run_in
from bpflab.verdicts import XDP_PASS, XDP_TX, verdict
from grader.checks import expect, fail, points
from grader.runner import LEADERBOARD

LAB = "xdp-dns"
FUZZ_FRAMES = 100_000
FUZZ_SEED = 2026
RECORDS = Path(__file__).with_name("xdp_dns_records.yaml")  # fixed: students may edit the lab's


@pytest.fixture(scope="module")
def records() -> Records:
    return dns_records.load(RECORDS)


@pytest.fixture(scope="module")
def server(program: Program, records: Records) -> Program:
    """The program, told its addresses and given the records."""
    echo.configure(program, SERVER_IPV4, SERVER_IPV6)
    dns_answers.load_map(program, records)
    return program


def run(server: Program, frame: bytes) -> testrun.RunResult:
    return testrun.run(server.fd, frame)


def expect_answer(server: Program, records: Records, frame: bytes, what: str) -> None:
    """The program must answer `frame` exactly as dnspython renders the answer."""
    want = expected_answer(frame, records)
    assert want is not None, f"the suite's own query is wrong: {what}"
    result = run(server, frame)
    expect(result.verdict == XDP_TX,
           f"Sent {what}.\nThe program returned {verdict('xdp', result.verdict)}; "
           "a query for a name in the records must be answered (XDP_TX).")
    if not same_answer(result.packet, want):
        fail(f"Sent {what}.\nAnswered: {describe(result.packet)}\nExpected: {describe(want)}\n"
             f"{dns_answers.first_difference(result.packet, want)}\n"
             f"Expected DNS answer:\n{dns_answers.message_of(want)}")


def expect_pass(server: Program, frame: bytes, what: str) -> None:
    """The program must pass `frame` on, byte for byte as it came."""
    result = run(server, frame)
    expect(result.verdict == XDP_PASS and result.packet == frame,
           f"Sent {what}: {describe(frame)}\nThe program returned "
           f"{verdict('xdp', result.verdict)}"
           f"{'' if result.packet == frame else ' and changed the frame'}; it must pass it to the "
           "kernel untouched (XDP_PASS), where the user-space server answers it.")


def expect_serves(server: Program, records: Records) -> None:
    """Pass-through checks mean something only for a program that answers a plain query."""
    expect_answer(server, records, query_frame("www.lab.example", "A"), "a plain A query for www.lab.example")


# -- unit layer: answers -------------------------------------------------------------------

@points(3)
def test_answers_an_a_query(server: Program, records: Records) -> None:
    """A queries for www and for the zone's apex get XDP_TX and exactly the right answer."""
    expect_answer(server, records, query_frame("www.lab.example", "A"), "an A query for www.lab.example")
    expect_answer(server, records, query_frame("lab.example", "A", qid=7, flags=0),
                  "an A query for the zone's apex, RD clear")


@points(2)
def test_answers_aaaa_queries_over_ipv6(server: Program, records: Records) -> None:
    """AAAA queries, over IPv6 and over IPv4, get exactly the right answer."""
    expect_answer(server, records, query_frame("www.lab.example", "AAAA", ipv6=True),
                  "an AAAA query over IPv6")
    expect_answer(server, records, query_frame("v6only.lab.example", "AAAA"), "an AAAA query over IPv4")


@points(2)
def test_names_match_in_any_case_and_keep_theirs(server: Program, records: Records) -> None:
    """Names asked in mixed case are found, and the answer keeps the question's case."""
    for name in ("WWW.LAB.EXAMPLE", "wWw.LaB.eXaMpLe", "A.Deep.NAME.in.THE.lab.example"):
        expect_answer(server, records, query_frame(name, "A"),
                      f"an A query for {name} (DNS names match in any case; the question is echoed as sent)")


@points(2)
def test_every_address_of_a_name(server: Program, records: Records) -> None:
    """A name with 8 addresses gets all 8 answers; RD is copied into the answer, CD is not."""
    expect_answer(server, records, query_frame("many.lab.example", "A"),
                  "an A query for a name with 8 addresses")
    expect_answer(server, records, query_frame("www.lab.example", "AAAA", ipv6=True, flags=0x0110),
                  "an AAAA query for a name with 2 addresses, RD and CD set (RD is copied, CD is not)")


@points(2)
def test_edns_queries_get_an_opt_record(server: Program, records: Records) -> None:
    """EDNS0 queries get an OPT record: 1232 bytes, DO copied, the query's options not echoed."""
    cookie = dns.edns.GenericOption(10, b"clientck")
    expect_answer(server, records, query_frame("www.lab.example", "A", edns=4096),
                  "an A query with EDNS0 (UDP size 4096)")
    expect_answer(server, records, query_frame("www.lab.example", "AAAA", ipv6=True, edns=1232, do=True,
                                               options=(cookie,)),
                  "an AAAA query with EDNS0, the DO bit and a cookie option (DO is copied, options are not)")


@points(2)
def test_udp_checksums_are_right(server: Program, records: Records) -> None:
    """Answers over IPv4 and IPv6 carry the right UDP checksum (pseudo-header and whole datagram)."""
    for frame, what in ((query_frame("www.lab.example", "A"), "over IPv4"),
                        (query_frame("many.lab.example", "A", ipv6=True, edns=1232), "over IPv6")):
        result = run(server, frame)
        expect(result.verdict == XDP_TX, f"A query {what} was not answered.")
        expect(dns_answers.udp_checksum_ok(result.packet),
               f"The answer {what} has a wrong UDP checksum: the client's kernel drops it. "
               "It covers a pseudo-header (both addresses, protocol 17, the UDP length) and the whole "
               "datagram, with the checksum field taken as 0.")


# -- unit layer: what must be passed -------------------------------------------------------

@points(1)
def test_names_and_types_it_does_not_hold_pass(server: Program, records: Records) -> None:
    """Queries the map cannot answer (unknown name, missing type, MX, ANY, class CH) are passed."""
    expect_serves(server, records)
    expect_pass(server, query_frame("nope.lab.example", "A"), "an A query for a name not in the records")
    expect_pass(server, query_frame("mail.lab.example", "AAAA"),
                "an AAAA query for a name with only an A record")
    expect_pass(server, query_frame("www.lab.example", "MX"), "an MX query")
    expect_pass(server, query_frame("www.lab.example", "ANY"), "an ANY query")
    chaos = bytearray(query_frame("www.lab.example", "A"))
    chaos[-1] = 3  # QCLASS CH
    fix_checksums(chaos)
    expect_pass(server, bytes(chaos), "an A query in class CH")


@points(2)
def test_responses_are_never_answered(server: Program, records: Records) -> None:
    """A DNS response (QR = 1) is passed, never answered: answering responses makes loops."""
    expect_serves(server, records)
    expect_pass(server, query_frame("www.lab.example", "A", flags=dns.flags.QR | dns.flags.RD),
                "a DNS response (QR=1) for www.lab.example: answering responses makes loops")


@points(1)
def test_other_opcodes_and_counts_pass(server: Program, records: Records) -> None:
    """A NOTIFY, a query with two questions and a query with the TC bit set are passed."""
    expect_serves(server, records)
    notify = dns.message.make_query("www.lab.example", "A")
    notify.set_opcode(dns.opcode.NOTIFY)
    expect_pass(server, dns_answers.wrap(notify.to_wire()), "a NOTIFY (opcode 4)")
    two = dns.message.make_query("www.lab.example", "A")
    two.question.append(dns.message.make_query("mail.lab.example", "A").question[0])
    expect_pass(server, dns_answers.wrap(two.to_wire()), "a query with two questions")
    truncated_flag = query_frame("www.lab.example", "A", flags=dns.flags.TC)
    expect_pass(server, truncated_flag, "a query with the TC bit set")


@points(1)
def test_compression_pointers_and_long_names_pass(server: Program, records: Records) -> None:
    """Names with a compression pointer, a bad label length or over 128 bytes are passed."""
    expect_serves(server, records)
    header = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    pointer = header + b"\x03www\xc0\x0c" + struct.pack("!HH", 1, 1)
    expect_pass(server, dns_answers.wrap(pointer), "a question whose name ends in a compression pointer")
    long_name = ".".join(["a" * 60] * 3) + ".lab.example"
    expect_pass(server, query_frame(long_name, "A"), "a name longer than the map's key (128 bytes)")
    for length in (64, 0x80, 0xBF):  # above 63 and below 0xC0: neither a label nor a pointer
        odd = header + bytes([length]) + b"www\x03lab\x07example\x00" + struct.pack("!HH", 1, 1)
        expect_pass(server, dns_answers.wrap(odd), f"a name whose first length byte is {length}")


@points(2)
def test_damaged_queries_pass(server: Program, records: Records) -> None:
    """Damaged queries are passed: bad or missing checksums, lying lengths, trailing bytes, truncations."""
    expect_serves(server, records)
    good = query_frame("www.lab.example", "A")
    expect_pass(server, damaged(good, UDP, "chksum"), "a query with a wrong UDP checksum")
    expect_pass(server, damaged(good, IP, "chksum"), "a query with a wrong IP header checksum")
    no_csum_v6 = with_field(query_frame("www.lab.example", "A", ipv6=True), UDP, "chksum", 0)
    expect_pass(server, no_csum_v6, "a UDP query over IPv6 without a checksum (not allowed)")
    plain = dns.message.make_query("www.lab.example", "A", use_edns=False).to_wire()
    expect_pass(server, dns_answers.wrap(plain + b"junk"), "a query with bytes after its question")
    with_edns = bytearray(dns.message.make_query("www.lab.example", "A", use_edns=0).to_wire())
    with_edns[-2:] = b"\0\x08"  # the OPT record's RDLENGTH: 8 bytes that are not there
    expect_pass(server, dns_answers.wrap(bytes(with_edns)), "an OPT record whose data runs past the end")
    # Options that lie about their lengths: a full server answers FORMERR, so the fast path passes.
    cookie = dns.edns.GenericOption(10, b"clientck")
    lying = dns.message.make_query("www.lab.example", "A", use_edns=0, options=[cookie]).to_wire()
    lying = lying.replace(b"\x00\x0a\x00\x08", b"\x00\x0a\x57\x08")
    expect_pass(server, dns_answers.wrap(lying), "an OPT record whose cookie claims 0x5708 bytes of its 12")
    short = bytearray(dns.message.make_query("www.lab.example", "A", use_edns=0).to_wire())
    short[-2:] = b"\0\x03"  # RDLENGTH 3: too short for any option's code and length
    short += b"\x00\x0a\x00"
    expect_pass(server, dns_answers.wrap(bytes(short)), "an OPT record of 3 bytes of options")
    for ipv6 in (False, True):
        frame = query_frame("www.lab.example", "A", ipv6=ipv6)
        for change in (-4, 4):  # the UDP length says less, or more, than the IP payload holds
            lying = length_changed(frame, UDP, "len", change)
            told = Ether(lying)[UDP].len
            expect_pass(server, lying, f"a query over IPv{6 if ipv6 else 4} whose UDP length is "
                        f"{told}, not the IP payload's {told - change}")
        for cut in truncations(frame, shortest=14):
            expect_pass(server, cut, f"a query over IPv{6 if ipv6 else 4} cut to {len(cut)} bytes")


@points(1)
def test_other_ports_and_tcp_pass(server: Program, records: Records) -> None:
    """Queries to another UDP port (5353), over TCP, or from a source the kernel drops are passed."""
    expect_serves(server, records)
    message = dns.message.make_query("www.lab.example", "A").to_wire()
    expect_pass(server, dns_answers.wrap(message, dport=5353), "an A query to UDP port 5353")
    tcp = bytearray(with_field(dns_answers.wrap(message), IP, "proto", 6))  # TCP: not a UDP datagram any more
    fix_checksums(tcp)
    expect_pass(server, bytes(tcp), "an IPv4 packet with protocol TCP carrying a query")
    # Martian sources, and those some kernels drop: the kernel that runs decides (parsing.h).
    for ipv6, layer, sources in ((False, IP, ("0.1.2.3", "127.0.0.1", SERVER_IPV4)),
                                 (True, IPv6, ("::", "::1", "::ffff:192.0.2.1", SERVER_IPV6))):
        for source in sources:
            query = query_frame("www.lab.example", "A", ipv6=ipv6)
            spoofed = bytearray(with_field(query, layer, "src", source))
            fix_checksums(spoofed)
            expect_pass(server, bytes(spoofed), f"an A query from {source}")


# -- network layer ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(server: Program, topology: Topology, attached: Program,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsServer]:
    """The program on the server's veth, and the user-space server behind it."""
    log = Path(tmp_path_factory.mktemp("dns")) / "user-space-server.log"
    addresses = (SERVER_IPV4, SERVER_IPV6)
    with dns_server.start(topology.server.netns, log, RECORDS, addresses=addresses) as userspace:
        yield userspace


def dig(topology: Topology, *args: str) -> str:
    done = run_in(topology.client.netns, ["dig", "+tries=1", "+time=2", *args])
    return done.stdout


def ask(topology: Topology, name: str, rtype: str, server: str = SERVER_IPV4, tcp: bool = False,
        **kw) -> dns.message.Message:
    query = dns.message.make_query(name, rtype, **kw)
    with in_netns(topology.client.netns):
        if tcp:
            return dns.query.tcp(query, server, timeout=2)
        return dns.query.udp(query, server, timeout=2)


def answered_by_xdp(server: Program, before: int) -> int:
    """Answers the program has sent since its `answers_sent` was `before`."""
    return dns_answers.answers_sent(server) - before


@points(3)
def test_dig_is_answered_by_xdp(server: Program, topology: Topology, service: NetnsServer) -> None:
    """Over the veth, `dig` gets an authoritative answer from the program; user space sees nothing."""
    before = dns_answers.answers_sent(server)
    lines_before = len(service.output().splitlines())
    output = dig(topology, f"@{SERVER_IPV4}", "www.lab.example", "A")
    expect("status: NOERROR" in output and "192.0.2.80" in output and "192.0.2.81" in output,
           f"dig www.lab.example A got no right answer:\n{output}")
    flags = output.split("flags:")[1].split(";")[0] if "flags:" in output else ""
    expect(" aa" in flags, f"The answer is not authoritative (AA):\n{output}")
    expect(answered_by_xdp(server, before) == 1,
           "dig was answered, but not by the program (its `answers` counter did not move).")
    logged = service.output().splitlines()[lines_before:]
    expect(not logged, f"The user-space server got the query too: {logged}")


@points(2)
def test_dnspython_over_ipv6_with_and_without_edns(server: Program, topology: Topology,
                                                   service: NetnsServer) -> None:
    """Over the veth, AAAA queries over IPv6, with and without EDNS, are answered by the program."""
    before = dns_answers.answers_sent(server)
    for kw in ({"use_edns": False}, {"use_edns": 0, "payload": 1232, "want_dnssec": True}):
        reply = ask(topology, "www.lab.example", "AAAA", server=SERVER_IPV6, **kw)
        addresses = [r.address for rrset in reply.answer for r in rrset]
        expect(addresses == ["2001:db8::80", "2001:db8::81"] and reply.flags & dns.flags.AA,
               f"AAAA www.lab.example over IPv6 ({kw}) got:\n{reply}")
        expect((reply.edns >= 0) == (kw["use_edns"] is not False),
               f"The answer's EDNS does not match the query's ({kw}):\n{reply}")
    expect(answered_by_xdp(server, before) == 2, "The answers did not come from the program.")


@points(1)
def test_mixed_case_over_the_network(server: Program, topology: Topology, service: NetnsServer) -> None:
    """Over the veth, `dig MaNy.LaB.ExAmPlE` gets its 8 addresses from the program, case kept."""
    before = dns_answers.answers_sent(server)
    output = dig(topology, f"@{SERVER_IPV4}", "MaNy.LaB.ExAmPlE", "A", "+noedns")
    expect(output.count("192.0.2.10") == 8 and "MaNy.LaB.ExAmPlE." in output,
           f"dig MaNy.LaB.ExAmPlE A (8 addresses, case kept) got:\n{output}")
    expect(answered_by_xdp(server, before) == 1, "The answer did not come from the program.")


@points(2)
def test_what_xdp_passes_reaches_the_user_space_server(server: Program, topology: Topology,
                                                       service: NetnsServer) -> None:
    """Passed queries reach the user-space server: unknown and long names, MX, class CH, NOTIFY, TCP."""
    logged = queries_in(service.output())
    before = dns_answers.answers_sent(server)
    ask(topology, "www.lab.example", "A")
    expect(answered_by_xdp(server, before) == 1,
           "The program did not answer www.lab.example A: passing everything earns nothing here.")
    before = dns_answers.answers_sent(server)
    nx = ask(topology, "nope.lab.example", "A")
    expect(nx.rcode() == dns.rcode.NXDOMAIN, f"nope.lab.example A: expected NXDOMAIN from user space:\n{nx}")
    nodata = ask(topology, "www.lab.example", "MX")
    expect(nodata.rcode() == dns.rcode.NOERROR and not nodata.answer, f"www MX: expected NODATA:\n{nodata}")
    refused = ask(topology, "www.lab.example", "A", rdclass="CH")
    expect(refused.rcode() == dns.rcode.REFUSED, f"www A in class CH: expected REFUSED:\n{refused}")
    long_name = ".".join(["a" * 60] * 3) + ".lab.example"
    expect(ask(topology, long_name, "A").rcode() == dns.rcode.NXDOMAIN, "A long name: expected NXDOMAIN.")
    notify = dns.message.make_query("www.lab.example", "A")
    notify.set_opcode(dns.opcode.NOTIFY)
    with in_netns(topology.client.netns):
        notimp = dns.query.udp(notify, SERVER_IPV4, timeout=2)
    expect(notimp.rcode() == dns.rcode.NOTIMP, f"A NOTIFY: expected NOTIMP from user space:\n{notimp}")
    tcp = ask(topology, "www.lab.example", "A", tcp=True)
    expect([r.address for rrset in tcp.answer for r in rrset] == ["192.0.2.80", "192.0.2.81"],
           f"www A over TCP (user space):\n{tcp}")
    expect(answered_by_xdp(server, before) == 0, "The program answered a query it must pass.")
    expect(service.wait_until(lambda output: queries_in(output) >= logged + 6, timeout=5),
           f"The user-space server did not log the passed queries:\n{service.output()}")


def queries_in(log: str) -> int:
    """How many queries the user-space server has logged (one line each, "udp ..." or "tcp ...")."""
    return sum(line.startswith(("udp ", "tcp ")) for line in log.splitlines())


# -- the leaderboard (lab 4, measuring) ------------------------------------------------------

LEADERBOARD_RUNS = 5_000


@points(0)
def test_ns_per_answer_on_the_leaderboard(server: Program, records: Records,
                                         record_property: Callable[[str, object], None]) -> None:
    """No points: your program's ns per answer above the XDP floor, for the leaderboard."""
    frame = query_frame("www.lab.example", "A")
    expect_answer(server, records, frame, "a plain A query (only a right answer is timed)")
    # One run per call: an answer rewrites the frame, and test-run does not reset it between
    # repeats (lab 4 shows why). The floor is an empty XDP program timed the same way.
    floor = measure.single_run_floor_ns("xdp", frame, LEADERBOARD_RUNS)
    cost = measure.single_run_ns(server.fd, frame, LEADERBOARD_RUNS)
    entry = {"name": "ns per DNS answer above the floor", "value": round(cost - floor, 1), "order": "asc"}
    record_property(LEADERBOARD, entry)


# -- fuzzing ---------------------------------------------------------------------------------

def fuzz_seeds() -> list[bytes]:
    cookie = dns.edns.GenericOption(10, b"clientck")
    return [
        query_frame("www.lab.example", "A"), query_frame("WwW.lab.EXAMPLE", "AAAA", ipv6=True),
        query_frame("many.lab.example", "A", edns=4096, do=True, options=(cookie,)),
        query_frame("nope.lab.example", "A"), query_frame("lab.example", "AAAA", edns=512),
    ]


@points(3)
def test_fuzzed_frames_get_no_wrong_answer(server: Program, records: Records) -> None:
    """100,000 fuzzed frames by test-run: every answer exactly right, everything else passed."""
    expect_serves(server, records)
    answered = 0
    for frame in fuzz.frames(fuzz_seeds(), FUZZ_FRAMES, seed=FUZZ_SEED):
        want = expected_answer(frame, records)
        result = run(server, frame)
        # Messages are built only on failure: describing 100,000 frames would take a minute.
        if want is None:
            if not (result.verdict == XDP_PASS and result.packet == frame):
                fail(f"Fuzzing: a frame that must be passed untouched was not: {describe(frame)} "
                     f"(verdict {verdict('xdp', result.verdict)}); bytes: {frame.hex()}")
        else:
            answered += 1
            if not (result.verdict == XDP_TX and same_answer(result.packet, want)
                    and dns_answers.udp_checksum_ok(result.packet)):
                fail(f"Fuzzing: a valid query got a wrong answer or none: {describe(frame)}; "
                     f"bytes: {frame.hex()}")
    expect(answered > 0, "Fuzzing made no valid query: the suite is broken.")
