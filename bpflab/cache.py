"""The xdp-cache lab's runtime: a real memcached behind the lab's programs, and views of the cache.

`CacheLab` is the lab's network: the client and server namespaces, memcached in the server's
(UDP on, stopped by pid), the lab's parts attached on the server's veth where the manifest puts
them, and clients from the client's namespace. `events` and `cached` read the programs' maps:
what the cache did, and what it holds. `throughput` and `zipf_hit_rate` are the lab's
measurements. `operations` drives a random mix of SETs and GETs from
two clients at once and returns what each saw, for the oracle's stale-read check. The grader's
suite, the notebook and the bench use it; nothing here knows what a right answer is.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bpflab import measure, testrun
from bpflab.attach import attach_xdp
from bpflab.course.labs import Lab, load_lab
from bpflab.oracles.memcached import PORT, Operation, get_frame, parse, value_of, zipf_keys
from bpflab.parts import attach_part, detach_all
from bpflab.processes import in_threads
from bpflab.programs import BPF_PROG_TYPE_XDP, Program, load_raw
from bpflab.services.memcached import Memcached, UdpClient, tcp_client
from bpflab.topology import Topology
from bpflab.verdicts import XDP_PASS

LAB_ID = "xdp-cache"
EVENTS = ("hits", "misses", "fills", "fills refused", "invalidations")  # slots of the `events` map
BENCH_KEY, BENCH_VALUE = b"bench:key", b"v" * 100  # the throughput's one key
CLIENTS = 2  # operations() runs this many clients at once: a GET may overlap a SET of its key


def events(program: Program) -> dict[str, int]:
    """What the cache did, summed over CPUs, by event name (EVENTS)."""
    return {EVENTS[slot]: n for slot, n in program.percpu_sums("events").items() if slot < len(EVENTS)}


def current_epoch(program: Program) -> int:
    return program.table("epoch")[ctypes.c_int(0)].value


def cached(program: Program) -> dict[bytes, bytes]:
    """The cache's entries that count (filled in the current epoch): key -> memcached's reply text."""
    now = current_epoch(program)
    return {bytes(key.bytes).rstrip(b"\0"): bytes(entry.reply[:entry.len])
            for key, entry in program.table("cache").items() if entry.epoch == now}


def words_sum(text: bytes) -> int:
    """The sum of `text`'s 16-bit words as the BPF program loads them (this machine's byte order),
    a last odd byte padded with a zero: what the fill stores as the entry's `text_sum`."""
    padded = text + b"\0" * (len(text) % 2)
    return sum(int.from_bytes(padded[i:i + 2], sys.byteorder) for i in range(0, len(padded), 2))


def put(program: Program, key: bytes, text: bytes) -> None:
    """Store memcached's reply `text` for `key` in the cache, in the current epoch, as the fill would:
    the hit path can then be tried alone."""
    table = program.table("cache")
    entry = table.Leaf()
    entry.len, entry.epoch, entry.text_sum = len(text), current_epoch(program), words_sum(text)
    ctypes.memmove(entry.reply, text, len(text))
    table[table.Key.from_buffer_copy(key.ljust(ctypes.sizeof(table.Key), b"\0"))] = entry


class CacheLab:
    """The lab's network and memcached; everything is undone on exit, in reverse."""

    def __init__(self, log: Path, lab: Lab | None = None) -> None:
        self.log, self.lab = Path(log), lab or load_lab(LAB_ID)
        self.topology = Topology()
        self.memcached: Memcached | None = None
        self._client = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> CacheLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> CacheLab:
        """Build it (what `with` does on entry); for notebooks, where one `with` cannot span cells."""
        try:
            self._stack.enter_context(self.topology)
            self.memcached = self._stack.enter_context(Memcached(self.server_netns, self.log))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._stack.close()

    @property
    def server_netns(self) -> str:
        return self.topology.server.netns

    @property
    def server_ip(self) -> str:
        return self.topology.server.ipv4

    # -- programs ------------------------------------------------------------------------------
    def attach(self, *programs: Program) -> None:
        """Attach each part on the server's veth where the lab's manifest puts it."""
        for program in programs:
            attach_part(program, self.lab, self.server_netns, self.topology.server.ifname)

    def detach(self) -> None:
        """Take every program off the server's veth."""
        detach_all(self.server_netns, self.topology.server.ifname)

    @contextlib.contextmanager
    def attached(self, *programs: Program) -> Iterator[None]:
        """`programs` attached for the body of the `with`, and detached after it."""
        try:
            self.attach(*programs)
            yield
        finally:
            self.detach()

    def test_run(self, program: Program, frame: bytes) -> testrun.RunResult:
        return testrun.run(program.fd, frame)

    # -- clients -------------------------------------------------------------------------------
    @property
    def client(self):
        """pymemcache's TCP client from the client namespace (for SETs, deletes, `stats`)."""
        if self._client is None:
            self._client = tcp_client(self.topology.client.netns, self.server_ip)
        return self._client

    def udp(self) -> UdpClient:
        """A UDP client from the client namespace, for GETs as single datagrams."""
        return UdpClient(self.topology.client.netns, self.server_ip)

    def get(self, key: bytes, request_id: int = 1) -> bytes:
        """One UDP GET; the reply's payload."""
        with self.udp() as udp:
            return udp.get(key, request_id)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """memcached stopped (SIGSTOP, by its pid) for the body of the `with`: what arrives meanwhile
        waits in its sockets, and it is answered in order of arrival once memcached goes on. The
        kernel and the programs see every packet as it comes: a test can make a write arrive
        between a GET and memcached's answer to it."""
        os.kill(self.memcached.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.memcached.process.pid, signal.SIGCONT)

    def get_hits(self) -> int:
        """memcached's own count of the GETs it answered from its memory."""
        return int(self.client.stats()[b"get_hits"])

    def operations(self, count: int, keys: int, set_share: float = 0.2, seed: int = 0) -> list[Operation]:
        """`count` random operations on `keys` keys from CLIENTS clients at once: SETs over TCP
        (acknowledged), GETs as UDP datagrams. Every SET writes a value of its own. Returns each
        operation as its client saw it, with when it was sent and answered."""
        history: list[Operation] = []

        def client(number: int) -> None:
            chance = random.Random(seed * CLIENTS + number)
            with contextlib.closing(tcp_client(self.topology.client.netns, self.server_ip)) as tcp, \
                    self.udp() as udp:
                for i in range(count // CLIENTS):
                    key = b"key-%d" % chance.randrange(keys)
                    sent = time.monotonic()
                    if chance.random() < set_share:
                        value = b"%d-%d-%d" % (seed, number, i)  # a value of its own, run after run
                        tcp.set(key, value, noreply=False)
                        history.append(Operation("set", key, value, sent, time.monotonic()))
                    else:
                        body = parse(udp.get(key, request_id=i & 0xFFFF)).body
                        history.append(Operation("get", key, value_of(body), sent, time.monotonic()))

        in_threads(client, range(CLIENTS))
        return history

    # -- measurements --------------------------------------------------------------------------
    def throughput(self, programs: list[Program], frames: int) -> dict[str, tuple[float, float]]:
        """GETs answered per second, and cores busy meanwhile, for one key's GETs sent by the
        in-kernel load generator: with the cache (`programs`, every part) answering at XDP, and
        with memcached alone answering (an XDP_PASS program on the server's veth instead, which
        veth needs to deliver frames sent with XDP_TX)."""
        frame = get_frame(BENCH_KEY, request_id=7)
        results = {}
        with self.attached(*programs):
            self.client.set(BENCH_KEY, BENCH_VALUE, noreply=False)
            self.get(BENCH_KEY)  # memcached answers, and its reply fills the cache
            results["XDP cache hits"] = measure.generated_answers_per_second(
                self.topology, frame, frames, PORT)
        passing = load_raw(BPF_PROG_TYPE_XDP, XDP_PASS, "server_pass")
        try:
            attach_xdp(self.server_netns, self.topology.server.ifname, passing)
            # As many frames: the generator does not wait for memcached, which answers what its
            # socket's queue holds and loses the rest, as long as the generator runs.
            results["memcached alone"] = measure.generated_answers_per_second(
                self.topology, frame, frames, PORT)
        finally:
            self.detach()
            os.close(passing)
        return results

    def zipf_hit_rate(self, program: Program, keys: int, gets: int, seed: int = 0) -> tuple[float, float]:
        """(the cache's hit rate, the best any cache of its size could do) for `gets` GETs of
        `keys` keys drawn with Zipf's law (0.99). The best: the share of the GETs that ask for
        the keys asked most, as many as the cache has entries: what a cache knowing the future
        would hold.
        memcached holds every key; `program` (the hit path) must be attached with the fill."""
        self.client.set_many({b"zipf:%d" % k: b"value %d" % k for k in range(keys)}, noreply=False)
        drawn = zipf_keys(keys, gets, seed=seed)
        before = events(program)
        with self.udp() as udp:
            for i, key in enumerate(drawn):
                udp.get(b"zipf:%d" % key, request_id=i & 0xFFFF)
        after = events(program)
        hits = after.get("hits", 0) - before.get("hits", 0)
        size = program.table("cache").max_entries
        best = sum(sorted(collections.Counter(drawn).values(), reverse=True)[:size])
        return hits / gets, best / gets
