"""Lab xdp-cache: a memcached cache at XDP, filled at TC egress, invalidated at TC ingress.

The hit path is graded by test-run with entries the suite puts in the cache itself, so Step 1
stands alone. The fill and the invalidation are graded against a real memcached in the server's
namespace, with real clients in the client's: GETs as UDP datagrams, SETs over TCP. A right
answer is the oracle's (bpflab/oracles/memcached.py): the reply memcached itself sends. Every
pass-through test first checks that the hit path works: passing everything is what the starter
does, and it earns nothing.
"""

from __future__ import annotations

import socket
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from bpflab import fuzz
from bpflab.cache import CacheLab, cached, events, put
from bpflab.oracles import memcached as oracle
from bpflab.packets import CLIENT_IPV4, SERVER_IPV4, damaged, ether, length_changed
from bpflab.parts import Parts
from bpflab.programs import Program
from bpflab.topology import socket_in
from bpflab.verdicts import XDP_PASS, XDP_TX, verdict
from grader.checks import expect, fail, points

LAB = "xdp-cache"
OPERATIONS, KEYS = 10_000, 100  # the stale-read test: random SETs and GETs on this many keys
FUZZ_FRAMES, FUZZ_SEED = 100_000, 18
SHOWN = 5  # stale reads quoted in a failure
RACE_ATTEMPTS, PAUSE = 3, 0.05  # the raced-write test: tries, and seconds memcached stays paused


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    """The lab's network, with memcached running in the server's namespace."""
    with CacheLab(tmp_path_factory.mktemp("xdp-cache") / "memcached.log") as lab:
        yield lab


def part(parts: Parts, entry: str) -> Program:
    """A part's program; its refusal, or a warning about it, fails the test with the explanation."""
    program = parts[entry]  # raises the ProgramError: the test fails with its explanation
    if program.warnings:
        fail(f"{entry}() loads, but it will not do what it should:\n" + "\n".join(program.warnings))
    return program


def text_of(key: bytes, value: bytes, flags: int = 0) -> bytes:
    """memcached's reply text for a hit, as the cache stores it (no frame header)."""
    return oracle.hit_reply(key, value, flags)[oracle.FRAME.size:]


def expect_answered(net: CacheLab, program: Program, frame: bytes, what: str) -> None:
    """Test-run `frame`: it must come back as memcached's reply, exactly."""
    result = net.test_run(program, frame)
    expect(result.verdict == XDP_TX, f"For {what}, {program.name}() returned "
           f"{verdict('xdp', result.verdict)}; a GET for a key the cache holds is answered with XDP_TX.")
    problem = oracle.reply_problem(frame, result.packet, cached(program))
    expect(not problem, f"For {what}, the reply is wrong: {problem}.")


def expect_untouched(net: CacheLab, program: Program, frame: bytes, what: str) -> None:
    result = net.test_run(program, frame)
    expect(result.verdict == XDP_PASS, f"For {what}, {program.name}() returned "
           f"{verdict('xdp', result.verdict)}; it must go to memcached: XDP_PASS.")
    expect(result.packet == frame, f"{program.name}() passed {what}, but changed it: pass it untouched.")


def working_hit(net: CacheLab, program: Program) -> None:
    """The hit path must work before its pass-through is graded."""
    put(program, b"working", text_of(b"working", b"yes"))
    result = net.test_run(program, oracle.get_frame(b"working", request_id=3))
    expect(result.verdict == XDP_TX, "A GET for a key the cache holds is not answered: the hit path must "
           "work before its pass-through is graded.")


def working_fill(net: CacheLab, program: Program) -> None:
    """The fill must work before what it refuses is graded (`program`: the hit path, attached
    with the fill)."""
    net.client.set(b"fills", b"yes", noreply=False)
    net.get(b"fills", 1)
    expect(b"fills" in cached(program), "memcached's reply to a GET that missed did not fill the cache: "
           "the fill must work before what it refuses is graded.")


def working_cache(net: CacheLab, program: Program) -> None:
    """The hit path and the fill must work before the invalidation is graded."""
    hits = events(program).get("hits", 0)
    net.client.set(b"works", b"yes", noreply=False)
    net.get(b"works", 1), net.get(b"works", 2)
    expect(events(program).get("hits", 0) > hits, "A key's second GET was not answered at XDP: the cache "
           "must work before its invalidation is graded.")


def udp_frame(payload: bytes, **udp: int) -> bytes:
    """A frame from the client to memcached's port carrying `payload` (checksums right)."""
    fields = {"sport": 40000, "dport": oracle.PORT, **udp}
    return bytes(ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4) / UDP(**fields) / Raw(payload))


# -- Step 1: the hit path -----------------------------------------------------------------------
@points(3)
def test_hit_is_memcacheds_reply(parts: Parts, net: CacheLab) -> None:
    """Step 1: a GET for a key the cache holds comes back as memcached's own reply, byte for byte,
    under the request's id, for short and long keys and values, any bytes in the value."""
    program = part(parts, "xdp_cache")
    cases = [(b"k", b"v", 0), (b"a" * oracle.MAX_KEY, b"x" * 100, 1), (b"user:42", b"y" * 1000, 7),
             (b"binary", bytes(range(256)) + b"\r\nEND\r\n", 65535)]
    for key, value, flags in cases:
        put(program, key, text_of(key, value, flags))
    before = events(program).get("hits", 0)
    for request_id, (key, value, _) in enumerate(cases, 0xBEE0):
        expect_answered(net, program, oracle.get_frame(key, request_id=request_id),
                        f"a GET for a {len(key)}-byte key holding {len(value)} bytes")
    expect(events(program).get("hits", 0) - before == len(cases),
           f"{len(cases)} hits answered, but the `events` map's HITS slot did not count them.")


@points(1)
def test_miss_passes_untouched(parts: Parts, net: CacheLab) -> None:
    """Step 1: a GET for a key the cache does not hold goes to memcached untouched, counted as a miss."""
    program = part(parts, "xdp_cache")
    working_hit(net, program)
    before = events(program).get("misses", 0)
    expect_untouched(net, program, oracle.get_frame(b"absent", request_id=5), "a GET for a key not cached")
    expect(events(program).get("misses", 0) == before + 1, "A miss is not counted in the `events` map.")


def not_served(frame: bytes) -> list[tuple[bytes, str]]:
    """Requests for the cached key `working` the cache must leave to memcached (or the kernel),
    each with one defect, the one it names (`frame` is a right GET for it)."""
    get = oracle.get_request(b"working")
    fragment = bytes(ether() / IP(src=CLIENT_IPV4, dst=SERVER_IPV4, flags="MF") /
                     UDP(sport=40000, dport=oracle.PORT) / Raw(get))
    long_key = b"w" * (oracle.MAX_KEY + 1)
    return [
        (udp_frame(oracle.datagram(1, b"get working other\r\n")), "a GET of two keys"),
        (udp_frame(oracle.datagram(1, b"gets working\r\n")), "a `gets` (it wants the CAS value too)"),
        (udp_frame(oracle.datagram(1, b"get working\n")), "a GET ended by \\n alone"),
        (udp_frame(get + b"get working\r\n"), "two GETs in one datagram"),
        (udp_frame(oracle.datagram(1, b"get working\r\n", sequence=1, total=2)), "part 2 of 2 of a request"),
        (udp_frame(oracle.datagram(1, b"get " + long_key + b"\r\n")), f"a key of {len(long_key)} bytes"),
        (udp_frame(get, dport=oracle.PORT + 1), "a GET to another port"),
        (udp_frame(get[:5]), "a datagram cut inside its frame header"),
        (frame[:-4], "a frame cut inside its key (the lengths now lie)"),
        (frame + b"\0" * 6, "a frame with bytes after its datagram"),
        (damaged(frame, UDP, "chksum"), "a GET with a wrong UDP checksum"),
        (damaged(frame, IP, "chksum"), "a GET with a wrong IP checksum"),
        (length_changed(frame, UDP, "len", -2), "a GET whose UDP length says 2 bytes less"),
        (length_changed(frame, IP, "len", 4), "a GET whose IP length says 4 bytes more"),
        (fragment, "the first fragment of a GET"),
        (bytes(ether(dst="02:00:00:00:00:99") / Ether(frame).payload), "a GET for another MAC address"),
    ]


@points(2)
def test_requests_not_served_pass_untouched(parts: Parts, net: CacheLab) -> None:
    """Step 1: what the cache cannot answer alone (several keys, `gets`, several commands or
    datagrams, too long a key, another port) or the kernel would drop (cut, bad checksums or
    lengths, fragments, another MAC) goes to the kernel untouched."""
    program = part(parts, "xdp_cache")
    working_hit(net, program)
    for frame, what in not_served(oracle.get_frame(b"working", request_id=1)):
        expect_untouched(net, program, frame, what)


# -- Step 2: the fill ---------------------------------------------------------------------------
@points(3)
def test_first_get_fills_the_next_are_hits(parts: Parts, net: CacheLab) -> None:
    """Step 2: the first GET of a key is answered by memcached and its reply fills the cache; the
    next ones are answered at XDP (the HITS count grows, memcached's `get_hits` does not)."""
    xdp, fill = part(parts, "xdp_cache"), part(parts, "tc_cache_fill")
    with net.attached(xdp, fill):
        net.client.set(b"filled", b"from memcached", flags=5, noreply=False)
        hits, served = events(xdp).get("hits", 0), net.get_hits()
        for request_id in (1, 2, 3):
            got = net.get(b"filled", request_id)
            wanted = oracle.hit_reply(b"filled", b"from memcached", flags=5, request_id=request_id)
            expect(got == wanted, f"GET {request_id} of `filled` got {got!r}; memcached's is {wanted!r}.")
        expect(cached(xdp).get(b"filled") == text_of(b"filled", b"from memcached", 5),
               "memcached's reply to the first GET did not fill the cache with its text (VALUE ... END).")
        expect(events(xdp).get("hits", 0) - hits == 2, "Of 3 GETs, memcached should answer the first and "
               f"XDP the 2 next; XDP answered {events(xdp).get('hits', 0) - hits}.")
        expect(net.get_hits() - served == 1, f"memcached answered {net.get_hits() - served} of the 3 GETs "
               "itself; only the first should reach it.")


@points(1)
def test_fill_takes_only_whole_replies(parts: Parts, net: CacheLab) -> None:
    """Step 2: a miss's `END`, and a reply too long for one datagram, fill nothing; the GETs stay right."""
    xdp, fill = part(parts, "xdp_cache"), part(parts, "tc_cache_fill")
    big = b"b" * 1500  # memcached sends its reply in two datagrams
    with net.attached(xdp, fill):
        working_fill(net, xdp)
        net.client.set(b"big", big, noreply=False)
        net.client.delete(b"nothing", noreply=False)
        for request_id in (1, 2):
            expect(net.get(b"nothing", request_id) == oracle.miss_reply(request_id),
                   "A GET for a key memcached does not hold must get memcached's END.")
            first = oracle.parse(net.get(b"big", request_id))
            expect((first.sequence, first.total) == (0, 2), f"The reply to a GET of {len(big)} bytes should "
                   "come from memcached, in 2 datagrams.")
        held = cached(xdp)
        expect(b"nothing" not in held and b"big" not in held, "The cache took a reply it cannot serve whole: "
               f"{sorted(key for key in held if key in (b'nothing', b'big'))}.")


@points(1)
def test_a_reply_that_raced_a_write_does_not_fill(parts: Parts, net: CacheLab) -> None:
    """Step 2: a GET misses, then a SET of its key arrives before memcached answers the GET (memcached
    paused meanwhile): the old value in that answer must not fill the cache, so the GET after the
    SET's acknowledgement returns the new value."""
    programs = [part(parts, entry) for entry in ("xdp_cache", "tc_cache_fill", "tc_cache_invalidate")]
    with net.attached(*programs), net.udp() as udp, socket_in(
            net.topology.client.netns, socket.AF_INET, socket.SOCK_STREAM) as tcp:
        working_cache(net, programs[0])
        tcp.settimeout(2)
        tcp.connect((net.server_ip, oracle.PORT))
        tcp.sendall(b"version\r\n")
        tcp.recv(100)  # memcached has the connection: the SET below waits in its socket, not in a queue
        for attempt in range(1, RACE_ATTEMPTS + 1):
            # Each try starts from a miss: a SET of its own invalidates whatever the last try filled
            # (had that one filled, this GET would be a hit that never meets the race).
            net.client.set(b"raced", b"old", noreply=False)
            with net.paused():
                udp.sock.send(oracle.get_request(b"raced", attempt))  # a miss: memcached has it
                tcp.sendall(b"set raced 0 0 %d\r\n%d\r\n" % (len(b"%d" % attempt), attempt))
                time.sleep(PAUSE)  # both through the server's hooks before memcached goes on
            answered = oracle.value_of(oracle.parse(udp.sock.recv(65536)).body)
            stored = tcp.recv(100)
            expect(stored == b"STORED\r\n", f"memcached answered the SET with {stored!r}.")
            if answered != b"%d" % attempt:
                break  # memcached answered the GET before the SET: the race the fill must see
        else:
            fail("memcached answered every raced GET after its SET: the race could not be made.")
        got = net.get(b"raced", 99)
        expect(got == oracle.hit_reply(b"raced", b"%d" % attempt, request_id=99),
               f"After the SET was acknowledged, GET got {got!r}: memcached's answer to a GET that missed "
               "before the SET filled the cache with the old value. Fill only if no write came since the "
               "miss.")


# -- Step 3: the invalidation -------------------------------------------------------------------
@points(2)
def test_set_then_get_returns_the_new_value(parts: Parts, net: CacheLab) -> None:
    """Step 3: once a SET over TCP is acknowledged, the next GET returns the new value, not the cached one."""
    programs = [part(parts, entry) for entry in ("xdp_cache", "tc_cache_fill", "tc_cache_invalidate")]
    with net.attached(*programs):
        working_cache(net, programs[0])
        for round_, value in enumerate((b"old", b"new", b"newer")):
            net.client.set(b"changing", value, noreply=False)
            for request_id in (1, 2):
                got = net.get(b"changing", request_id)
                expect(got == oracle.hit_reply(b"changing", value, request_id=request_id),
                       f"After SET changing = {value!r}, GET {request_id} got {got!r}." +
                       (" The cache still served the value before the SET: the SET must invalidate it."
                        if round_ else ""))


@points(1)
def test_delete_and_incr_invalidate_over_udp_and_tcp(parts: Parts, net: CacheLab) -> None:
    """Step 3: a `delete` sent as a UDP datagram and an `incr` over TCP invalidate the key too."""
    programs = [part(parts, entry) for entry in ("xdp_cache", "tc_cache_fill", "tc_cache_invalidate")]
    with net.attached(*programs), net.udp() as udp:
        working_cache(net, programs[0])
        net.client.set(b"counter", b"5", noreply=False)
        udp.get(b"counter", 1), udp.get(b"counter", 2)  # the second from the cache
        net.client.incr(b"counter", 1)
        got = udp.get(b"counter", 3)
        expect(got == oracle.hit_reply(b"counter", b"6", request_id=3), f"After incr, GET got {got!r}; the "
               "value is 6.")
        udp.get(b"counter", 4)
        deleted = udp.send(oracle.datagram(5, b"delete counter\r\n"))
        expect(oracle.parse(deleted).body == b"DELETED\r\n", f"memcached answered the delete: {deleted!r}.")
        got = udp.get(b"counter", 6)
        expect(got == oracle.miss_reply(6), f"After a delete over UDP, GET got {got!r}; memcached sends END.")


@points(3)
def test_no_stale_reads_under_random_operations(parts: Parts, net: CacheLab) -> None:
    """Step 3: 10,000 random SETs and GETs on 100 keys from two clients at once: no GET returns a value
    older than the last SET of its key acknowledged before the GET was sent."""
    programs = [part(parts, entry) for entry in ("xdp_cache", "tc_cache_fill", "tc_cache_invalidate")]
    with net.attached(*programs):
        working_cache(net, programs[0])
        history = net.operations(OPERATIONS, KEYS, seed=FUZZ_SEED)
    stale = oracle.stale_reads(history)
    expect(not stale, f"{len(stale)} of {len(history)} operations read a stale value, e.g.:\n" +
           "\n".join(stale[:SHOWN]))


# -- fuzzing ------------------------------------------------------------------------------------
@points(2)
def test_fuzz_never_a_wrong_reply(parts: Parts, net: CacheLab) -> None:
    """100,000 random and mutated requests by test-run: every reply is memcached's, every pass untouched."""
    program = part(parts, "xdp_cache")
    working_hit(net, program)
    seeds = [oracle.get_frame(b"working", request_id=2), oracle.get_frame(b"absent"),
             udp_frame(oracle.datagram(1, b"get working absent\r\n"))]
    held, replied = cached(program), 0
    for frame in fuzz.frames(seeds, FUZZ_FRAMES, seed=FUZZ_SEED):
        result = net.test_run(program, frame)
        if result.verdict == XDP_PASS and result.packet == frame:
            continue
        problem = oracle.reply_problem(frame, result.packet, held) if result.verdict == XDP_TX else \
            "it must be answered (XDP_TX) or passed untouched (XDP_PASS)"
        if problem:
            fail(f"Fuzzing (seed {FUZZ_SEED}): for {frame.hex()} the program returned "
                 f"{verdict('xdp', result.verdict)}: {problem}.")
        replied += 1
    expect(replied > 0, "The program answered none of the fuzzer's valid GETs.")
