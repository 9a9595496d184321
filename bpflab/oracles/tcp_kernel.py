"""The kernel's own view of TCP, which the tcp-state lab's programs are checked against.

`ss -tinH` gives every socket of a namespace with its state and figures (cwnd, RTT,
retransmissions); `nstat` gives the namespace's counters (segments received, listen queue
overflows, cookies sent and accepted). Both read the kernel, not the programs under test.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from bpflab.topology import run_in

# ss's state names, and the kernel's numbers for them (BPF_TCP_* in linux/bpf.h).
STATES = {
    "ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5, "TIME-WAIT": 6,
    "UNCONN": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10, "CLOSING": 11,
}
STATE_NAMES = {
    0: "no socket", 1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
    12: "NEW_SYN_RECV",
}


@dataclass(frozen=True)
class Socket:
    """One line of `ss -tinH`: a socket of the namespace, as the kernel sees it."""

    state: int  # BPF_TCP_*
    local: tuple[str, int]
    peer: tuple[str, int]
    cwnd: int | None  # segments; None where ss has no figures (TIME_WAIT, LISTEN)
    rtt_ms: float | None
    retrans: int  # total retransmissions of the connection's life

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]


def _endpoint(text: str) -> tuple[str, int]:
    address, _, port = text.rpartition(":")
    return address.strip("[]"), int(port) if port.isdigit() else 0  # a listener's peer is *:*


def parse_ss(output: str) -> list[Socket]:
    """Parse `ss -tinH state all`: a socket's line, then (with -i) an indented line of figures."""
    sockets: list[Socket] = []
    lines = output.splitlines()
    for k, line in enumerate(lines):
        fields = line.split()
        if not fields or line[0].isspace() or fields[0] not in STATES:
            continue
        info = lines[k + 1] if k + 1 < len(lines) and lines[k + 1][:1].isspace() else ""
        cwnd, rtt, retrans = (re.search(pattern, info) for pattern in
                              (r"\bcwnd:(\d+)", r"\brtt:([\d.]+)/", r"\bretrans:\d+/(\d+)"))
        sockets.append(Socket(
            state=STATES[fields[0]], local=_endpoint(fields[3]), peer=_endpoint(fields[4]),
            cwnd=int(cwnd[1]) if cwnd else None, rtt_ms=float(rtt[1]) if rtt else None,
            retrans=int(retrans[1]) if retrans else 0,
        ))
    return sockets


def sockets(netns: str, port: int) -> list[Socket]:
    """The TCP sockets of netns `netns` on local port `port`, every state, with figures."""
    done = run_in(netns, ["ss", "-tinH", "state", "all", "sport", "=", f":{port}"])
    done.check_returncode()
    return parse_ss(done.stdout)


def counters(netns: str) -> dict[str, int]:
    """The namespace's SNMP and netstat counters (TcpInSegs, TcpExtListenOverflows, ...)."""
    done = run_in(netns, ["nstat", "--ignore", "--noupdate", "--zeros", "--json"])
    done.check_returncode()
    return json.loads(done.stdout)["kernel"]
