"""Two network namespaces, a client and a server, joined by a veth pair.

    client netns                          server netns
    +------------------------+            +------------------------+
    | <p>c  192.0.2.1/24     |<== veth ==>| <p>s  192.0.2.2/24     |
    |       2001:db8::1/64   |            |       2001:db8::2/64   |
    | XDP_PASS program       |            | the lab's program      |
    +------------------------+            +------------------------+

Why the client's veth carries an XDP_PASS program: a frame sent back with XDP_TX on a veth is
delivered through the peer's XDP receive path, which exists only while the peer has an XDP
program. Without one the server counts the frame as sent and the client never sees it.
Checksum offload is off on both ends, so that frames carry complete checksums as on a wire.

Every object is named after the process that made it (`bpflab-<pid>-<n>-client`), so a later
run can tell what a killed run left behind (its pid is gone) and remove it. Deleting a netns
deletes its veth end, and with it every XDP and TC program attached there.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import subprocess
import textwrap
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import netns

from bpflab.attach import attach_xdp, detach_xdp, existing_netns, outside_event_loop
from bpflab.packets import CLIENT_IPV4, CLIENT_IPV6, CLIENT_MAC, SERVER_IPV4, SERVER_IPV6, SERVER_MAC
from bpflab.processes import pid_alive, restore_sigterm, signals_held, sigterm_interrupts
from bpflab.programs import BPF_PROG_TYPE_XDP, load_raw
from bpflab.verdicts import XDP_PASS

NAME_PREFIX = "bpflab"
NETNS_NAME = re.compile(rf"^{NAME_PREFIX}-(\d+)-\d+-(client|server)$")
NUD_PERMANENT = 0x80
COMMAND_SHOWN = 100  # characters of a live run's command line that cleanup --all shows
REPLY_WAIT = 3  # seconds ping waits for a late reply: a loaded grading host can hold one back 1 s
_counter = itertools.count()


@dataclass(frozen=True)
class Side:
    """One end of the link: its namespace, interface and addresses."""

    netns: str
    ifname: str
    ipv4: str
    ipv6: str
    mac: str


def live_runs() -> dict[str, int]:
    """Our namespaces whose process is still alive (a lab, a grader, another student), by owner pid."""
    owners = {name: int(match.group(1)) for name in netns.listnetns() if (match := NETNS_NAME.match(name))}
    return {name: pid for name, pid in owners.items() if pid_alive(pid)}


def command_of(pid: int) -> str:
    """The command line of a live process, for telling a person whose namespace this is."""
    with contextlib.suppress(OSError):
        line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return textwrap.shorten(line, COMMAND_SHOWN)  # also joins the lines of a `python -c` program
    return "?"


@outside_event_loop
def cleanup_stale(everything: bool = False, pid: int | None = None) -> list[str]:
    """Remove the namespaces of runs whose process is gone.

    `everything` removes all of ours, live or not; `pid` also removes those of that live process.
    """
    removed = []
    for name in netns.listnetns():
        match = NETNS_NAME.match(name)
        owner = int(match.group(1)) if match else None
        if match and (everything or owner == pid or not pid_alive(owner)):
            with contextlib.suppress(FileNotFoundError):
                netns.remove(name)
            removed.append(name)
    return removed


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the body in netns `name` (this thread only), e.g. to open scapy sockets there."""
    netns.pushns(name)
    try:
        yield
    finally:
        netns.popns()


def socket_in(name: str, *args, **kwargs) -> socket.socket:
    """A socket made in netns `name` (socket.socket's arguments): it belongs to the namespace it
    was made in for its whole life, wherever it is used from."""
    with in_netns(name):
        return socket.socket(*args, **kwargs)


def run_in(name: str, argv: Sequence[str], timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    """Run a command (ping, dig, tcpdump...) inside netns `name` and capture its output."""
    return subprocess.run(
        ["ip", "netns", "exec", name, *argv],
        capture_output=True, text=True, timeout=timeout, check=False, **kwargs,
    )


def sysctl(name: str, key: str, value: str | int) -> None:
    """Set a sysctl in netns `name` (e.g. net.ipv4.icmp_echo_ignore_all)."""
    with in_netns(name), open(f"/proc/sys/{key.replace('.', '/')}", "w") as f:
        f.write(str(value))


class Topology:
    """A client and a server namespace joined by veth; a context manager that always cleans up.

    On entry it first removes what killed earlier runs left. SIGTERM is turned into the same
    clean exit as Ctrl-C while the topology exists.
    """

    def __init__(self, peer_xdp: bool = True) -> None:
        self.peer_xdp = peer_xdp
        tag = f"{NAME_PREFIX}-{os.getpid()}-{next(_counter)}"
        short = f"bl{os.getpid()}{chr(ord('a') + int(tag.rsplit('-', 1)[1]) % 26)}"
        self.client = Side(f"{tag}-client", f"{short}c", CLIENT_IPV4, CLIENT_IPV6, CLIENT_MAC)
        self.server = Side(f"{tag}-server", f"{short}s", SERVER_IPV4, SERVER_IPV6, SERVER_MAC)
        self._peer_fd: int | None = None
        self._old_sigterm = None

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> Topology:
        return self.start()

    def start(self) -> Topology:
        """Build it (what `with` does on entry); for notebooks, where one `with` cannot span cells."""
        cleanup_stale()
        main = threading.current_thread() is threading.main_thread()
        if main:
            self._old_sigterm = sigterm_interrupts()  # a stopped grader cleans up as on Ctrl-C
        try:
            # Ctrl-C or SIGTERM in the middle of netlink work can leave pyroute2 waiting for a
            # helper process that will never answer: hold them until the build is done, then
            # let them in, and the `except` below removes what was built.
            with signals_held() if main else contextlib.nullcontext():
                self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete both namespaces (and with them the veth and every program attached there)."""
        self._remove_namespaces()
        if self._peer_fd is not None:
            os.close(self._peer_fd)
            self._peer_fd = None
        if self._old_sigterm is not None:
            restore_sigterm(self._old_sigterm)
            self._old_sigterm = None

    @outside_event_loop
    def _remove_namespaces(self) -> None:
        for side in (self.client, self.server):
            with contextlib.suppress(FileNotFoundError, OSError):
                netns.remove(side.netns)

    @outside_event_loop
    def _build(self) -> None:
        for side in (self.client, self.server):
            netns.create(side.netns)
        with existing_netns(self.client.netns) as cns:
            cns.link(
                "add", ifname=self.client.ifname, kind="veth",
                peer={"ifname": self.server.ifname, "net_ns_fd": self.server.netns},
            )
        for side in (self.client, self.server):
            with existing_netns(side.netns) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                index = ns.link_lookup(ifname=side.ifname)[0]
                # Keep IPv6 quiet: no router solicitations, and no DAD (`nodad` below). The
                # kernel still sends a few MLD reports when the link comes up.
                sysctl(side.netns, f"net.ipv6.conf.{side.ifname}.router_solicitations", 0)
                ns.addr("add", index=index, address=side.ipv4, prefixlen=24)
                ns.addr("add", index=index, address=side.ipv6, prefixlen=64, flags=0x02)  # nodad
                # Fixed MACs: each topology is its own link, so they never clash, and unit
                # tests' frames (bpflab.packets) carry the same ones as real traffic.
                ns.link("set", index=index, address=side.mac, state="up")
            # veth "offloads" checksums: a UDP datagram crosses it with only the pseudo-header
            # summed, and the receiving kernel trusts it. XDP sees those bytes, so a server that
            # verifies checksums (the DNS lab's) would pass every query. Real NICs put complete
            # checksums on the wire; with transmit offload off, veth does too.
            run_in(side.netns, ["ethtool", "--offload", side.ifname, "tx", "off"]).check_returncode()
        # Static neighbours: no ARP or neighbour discovery traffic to confuse counts.
        for side, peer in ((self.client, self.server), (self.server, self.client)):
            with existing_netns(side.netns) as ns:
                index = ns.link_lookup(ifname=side.ifname)[0]
                for address in (peer.ipv4, peer.ipv6):
                    ns.neigh("replace", dst=address, lladdr=peer.mac, ifindex=index, state=NUD_PERMANENT)
        if self.peer_xdp:
            self.add_peer_xdp()

    # -- the veth XDP_TX trap -----------------------------------------------------------------
    def add_peer_xdp(self) -> None:
        """Give the client's veth an XDP_PASS program, so frames sent with XDP_TX arrive."""
        if self._peer_fd is None:
            self._peer_fd = load_raw(BPF_PROG_TYPE_XDP, XDP_PASS, "peer_pass")
        attach_xdp(self.client.netns, self.client.ifname, self._peer_fd, "native")

    def remove_peer_xdp(self) -> None:
        """Take the client's XDP_PASS program away, to see XDP_TX replies vanish."""
        detach_xdp(self.client.netns, self.client.ifname)

    # -- conveniences -------------------------------------------------------------------------
    def ping(
        self, count: int = 5, ipv6: bool = False, interval: float = 0.05, size: int = 56,
        options: Sequence[str] = (),
    ) -> PingResult:
        """Ping the server from the client; return what `ping` reported."""
        target = self.server.ipv6 if ipv6 else self.server.ipv4
        argv = ["ping", "-6" if ipv6 else "-4", "-n", "-q", "-c", str(count), "-i", str(interval),
                "-W", str(REPLY_WAIT), "-s", str(size), *options, target]
        done = run_in(self.client.netns, argv, timeout=count * interval + REPLY_WAIT + 10)
        return PingResult.parse(done.stdout, count)

    def kernel_echo(self, enabled: bool) -> None:
        """Let the server's kernel answer pings, or not (to prove who answered)."""
        sysctl(self.server.netns, "net.ipv4.icmp_echo_ignore_all", 0 if enabled else 1)
        sysctl(self.server.netns, "net.ipv6.icmp.echo_ignore_all", 0 if enabled else 1)


@dataclass(frozen=True)
class PingResult:
    sent: int
    received: int
    output: str

    @classmethod
    def parse(cls, output: str, count: int) -> PingResult:
        match = re.search(r"(\d+) packets transmitted, (\d+) received", output)
        sent, received = (int(match.group(1)), int(match.group(2))) if match else (count, 0)
        return cls(sent, received, output.strip())
