"""The tcp-state lab's runtime: its programs, its network, and the kernel's view to check them by.

The lab's file holds several programs, each at its own hook (the lab's `parts`, loaded by
bpflab.parts). `TcpLab` is the lab's network: the client and server namespaces,
a TCP server inside a cgroup of the run's own (where a sock_ops program sees its sockets), and
SYN cookies always on in the server's namespace while a shield runs, as its helper needs. The grader's
suite and the notebook both use it; nothing here knows what a right answer is.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from bpflab import testrun
from bpflab.attach import attach, attach_xdp, detach_tc, detach_xdp
from bpflab.cgroups import ProgramCgroup
from bpflab.course.labs import BPF_TOOLS
from bpflab.oracles import tcp_kernel
from bpflab.packets import CLIENT_IPV4, SERVER_IPV4, ether
from bpflab.programs import Program, load
from bpflab.services import tcp_service
from bpflab.services.tcp_service import PORT, TcpServer
from bpflab.topology import Topology, in_netns, sysctl
from bpflab.wire import Wire

# net.ipv4.tcp_syncookies: 1 (the default) sends cookies when the listener's queue overflows; 2
# always, and only then does bpf_tcp_gen_syncookie() make one (Linux 6.1 to 6.18). With 2 the
# kernel keeps no request socket for a handshake either: its ACK goes to the listener.
OVERFLOW_COOKIES, ALWAYS_COOKIES = 1, 2

FLOOD_NET = "192.0.2.{}"  # spoofed flood sources: addresses of the client's subnet nobody holds
FLOOD_HOSTS = range(100, 250)
FLOOD_BURST = 200  # SYNs sent between two looks at the clients: the flood's head start, too
SETTLE_QUIET, SETTLE_LIMIT = 0.15, 5.0  # seconds without a segment that end an exchange; at most
LINUX_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]


@dataclass(frozen=True)
class Flood:
    """What a SYN flood with real clients came to."""

    sent: int  # spoofed SYNs the veth took
    connected: int  # real clients that connected and got their answer
    failure: str  # the first client's failure, or ""
    seconds: float


def per_state(program: Program, table: str) -> dict[str, int]:
    """A per-state counter table (slot 0 "no socket", then BPF_TCP_*), by state name."""
    return {tcp_kernel.STATE_NAMES.get(slot, str(slot)): n for slot, n in program.percpu_sums(table).items()}


def flows(program: Program, table: str) -> dict[int, object]:
    """A per-flow map (struct flow -> figures), by the client's port."""
    return {key.client_port: value for key, value in program.table(table).items()}


def segment(flags: str, sport: int = 40000, seq: int = 1000, ack: int = 0, data: bytes = b"",
            options: list | None = None, src: str = CLIENT_IPV4, dport: int = PORT,
            dataofs: int | None = None) -> bytes:
    """A TCP segment from the client to the lab's server port, as a frame (scapy fills the
    checksums, whatever `dataofs` claims). A SYN carries the options Linux sends unless
    `options` says otherwise."""
    if options is None:
        options = LINUX_SYN_OPTIONS if "S" in flags else []
    tcp = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, options=options, dataofs=dataofs)
    return bytes(ether() / IP(src=src, dst=SERVER_IPV4) / tcp / (Raw(data) if data else b""))


class TcpLab:
    """The lab's network: a Topology, a cgroup with `sockops` attached (if given), the TCP
    server inside it. Everything is undone on exit, in reverse."""

    def __init__(self, log: Path, sockops: Program | None = None, backlog: int = tcp_service.BACKLOG) -> None:
        self.log, self.sockops, self.backlog = Path(log), sockops, backlog
        self.topology = Topology()
        self.cgroup: ProgramCgroup | None = None
        self.server: TcpServer | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> TcpLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> TcpLab:
        """Build it (what `with` does on entry); for notebooks, where one `with` cannot span cells."""
        try:
            self._stack.enter_context(self.topology)
            sysctl(self.topology.server.netns, "net.ipv4.tcp_syncookies", OVERFLOW_COOKIES)
            self.cgroup = self._stack.enter_context(ProgramCgroup())
            if self.sockops is not None:
                self.cgroup.attach(self.sockops)
            self.server = self._stack.enter_context(
                TcpServer(self.topology.server.netns, self.log, backlog=self.backlog, cgroup=self.cgroup))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self._stack.close()

    @property
    def server_netns(self) -> str:
        return self.topology.server.netns

    @property
    def client_netns(self) -> str:
        return self.topology.client.netns

    @contextlib.contextmanager
    def always_cookies(self) -> Iterator[None]:
        """SYN cookies for every SYN in the server's namespace, as the shield's helper needs."""
        sysctl(self.server_netns, "net.ipv4.tcp_syncookies", ALWAYS_COOKIES)
        try:
            yield
        finally:
            sysctl(self.server_netns, "net.ipv4.tcp_syncookies", OVERFLOW_COOKIES)

    # -- programs ------------------------------------------------------------------------------
    def attach(self, program: Program) -> None:
        """Attach an XDP or TC program on the server's veth; an XDP program replaces the last."""
        if program.hook == "xdp":
            detach_xdp(self.server_netns, self.topology.server.ifname)
        attach(program, self.server_netns, self.topology.server.ifname)

    @contextlib.contextmanager
    def attached(self, program: Program) -> Iterator[Program]:
        """`program` attached for the body of the `with`, and detached after it."""
        self.attach(program)
        try:
            yield program
        finally:
            detach = detach_xdp if program.hook == "xdp" else detach_tc
            detach(self.server_netns, self.topology.server.ifname)

    @contextlib.contextmanager
    def counting(self, program: Program, table: str) -> Iterator[dict[str, int]]:
        """`program` attached for the body of the `with`; after it, once the traffic has settled,
        the dict it gave holds how the program's per-state `table` changed, by state name."""
        changed: dict[str, int] = {}
        with self.attached(program):
            before = per_state(program, table)
            yield changed
            self.settle()
        after = per_state(program, table)
        changed.update({state: n - before.get(state, 0) for state, n in after.items()
                        if n != before.get(state, 0)})

    def test_run(self, program: Program, frame: bytes) -> testrun.RunResult:
        """Test-run `program` on `frame` from inside the server's namespace: a socket lookup
        (BPF_F_CURRENT_NETNS) finds the sockets of the namespace the caller is in."""
        with in_netns(self.server_netns):
            return testrun.run(program.fd, frame)

    @contextlib.contextmanager
    def lossy(self, every: int = 40, limit: int = 8) -> Iterator[Program]:
        """Lose every `every`-th data segment that reaches the client, `limit` at most, so that
        the server retransmits (bpf/tools/tcp_dropper.c, in place of the client's XDP_PASS)."""
        dropper = load(BPF_TOOLS / "tcp_dropper.c", "tcp_dropper", "xdp",
                       (f"-DDROP_EVERY={every}", f"-DDROP_LIMIT={limit}"))
        client = self.topology.client
        try:
            attach_xdp(client.netns, client.ifname, dropper.fd)
            yield dropper
        finally:
            self.topology.add_peer_xdp()  # the XDP_PASS program again: XDP_TX needs one there
            dropper.close()

    # -- traffic and the kernel's view ---------------------------------------------------------
    def exchange(self, wanted: int = 0, send: bytes = b"", close: bool = False) -> int:
        """One whole connection from the client: ask for `wanted` bytes, send `send`, close
        (the server first if `close`). Returns the client's port."""
        return tcp_service.exchange(self.client_netns, SERVER_IPV4, PORT, wanted, close, send)

    def connection(self, wanted: int = 0, send: bytes = b""):
        """A client connection kept open while the `with` body runs."""
        return tcp_service.connection(self.client_netns, SERVER_IPV4, PORT, wanted, send=send)

    def sockets(self) -> list[tcp_kernel.Socket]:
        return tcp_kernel.sockets(self.server_netns, PORT)

    def counters(self) -> dict[str, int]:
        return tcp_kernel.counters(self.server_netns)

    def settle(self) -> dict[str, int]:
        """Wait until the server's namespace has received no segment for a moment (the last ACKs
        of an exchange arrive after the client is done); then its counters."""
        deadline, last = time.monotonic() + SETTLE_LIMIT, self.counters()
        while time.monotonic() < deadline:
            time.sleep(SETTLE_QUIET)
            now = self.counters()
            if now["TcpInSegs"] == last["TcpInSegs"]:
                return now
            last = now
        return last

    def flood_with_clients(self, syns: int, clients: int) -> Flood:
        """Spoofed SYNs, and once the flood is under way, `clients` real clients connecting one
        after the other. The flood lasts `syns` SYNs, and longer while clients are still at it (a
        flood does not stop for them); the clients stop at the first that fails, since the next
        ones would wait as long (tcp_service.CLIENT_TIMEOUT)."""
        connected, failures = [], []

        def connect() -> None:
            for _ in range(clients):
                try:
                    self.exchange(wanted=1000, send=b"r" * 100)
                except OSError as exc:
                    failures.append(f"client {len(connected) + 1}: {type(exc).__name__} {exc}")
                    return
                connected.append(1)

        started = time.monotonic()
        sent, burst = self.syn_flood(FLOOD_BURST), 1
        real = threading.Thread(target=connect)
        real.start()
        while sent < syns or real.is_alive():
            sent += self.syn_flood(FLOOD_BURST, seed=burst)
            burst += 1
        real.join()
        return Flood(sent, len(connected), failures[0] if failures else "", time.monotonic() - started)

    def syn_flood(self, count: int, seed: int = 0) -> int:
        """Send `count` SYNs from spoofed sources of the client's subnet that nobody holds (their
        SYN-ACKs go unanswered, as a flood's do); return how many the veth took."""
        chance = random.Random(seed)
        sent = 0
        with Wire(self.client_netns, self.topology.client.ifname) as wire:
            for _ in range(count):
                frame = segment("S", sport=chance.randrange(1024, 65536), seq=chance.getrandbits(32),
                                src=FLOOD_NET.format(chance.choice(FLOOD_HOSTS)))
                sent += wire.send(frame)
        return sent
