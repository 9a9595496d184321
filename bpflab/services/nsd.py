"""NSD, a real authoritative server (Debian's package), as the DNS lab's yardstick.

`start` runs NSD in the server namespace on the zone generated from the same records file
(dns_records.zone_text), in a folder of its own, in the foreground (`-d`), stopped by its
process id. `compare` asks the lab's service (XDP plus the user-space server, port 53) and NSD
(another port, same addresses) the same questions from the client namespace and reports every
field of the answers that differs.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode

from bpflab.oracles import dns_records
from bpflab.services.netns_server import NetnsServer
from bpflab.topology import Topology, in_netns

NSD_PORT = 5300

CONFIG = """\
server:
    ip-address: {ipv4}@{port}
    ip-address: {ipv6}@{port}
    username: ""
    chroot: ""
    zonesdir: "{folder}"
    pidfile: "{folder}/nsd.pid"
    database: ""
    xfrdfile: "{folder}/xfrd.state"
    zonelistfile: "{folder}/zone.list"
    logfile: "/dev/stderr"
    server-count: 1
    # No NS and glue records in positive answers: optional (RFC 1034 4.3.2), and the fast path
    # does not add them. NSD's default, no, adds them; the comparison says so without this.
    minimal-responses: yes
    # Debian's NSD limits answers to 200 per second per client network by default (response
    # rate limiting, against amplification attacks). One test client would measure that limit.
    rrl-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: {zone}
    zonefile: zone
"""


def start(netns: str, folder: Path, records: dns_records.Records, addresses: tuple[str, str],
          port: int = NSD_PORT) -> NetnsServer:
    """NSD serving `records` on `addresses` (IPv4, IPv6) and `port` inside `netns`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zone").write_text(dns_records.zone_text(records))
    config = folder / "nsd.conf"
    config.write_text(CONFIG.format(ipv4=addresses[0], ipv6=addresses[1], port=port, folder=folder,
                                    zone=records.zone))
    return NetnsServer(netns, ["nsd", "-d", "-c", str(config)], folder / "nsd.log", ready="nsd started")


@dataclass(frozen=True)
class Question:
    """One query of the comparison: what is asked, and how."""

    name: str
    rtype: str = "A"
    edns: bool = True
    do: bool = False
    tcp: bool = False
    ipv6: bool = False
    flags: int = dns.flags.RD
    opcode: int = dns.opcode.QUERY

    def __str__(self) -> str:
        how = [("tcp" if self.tcp else "udp"), ("v6" if self.ipv6 else "v4"),
               ("edns" if self.edns else "no edns")] + (["DO"] if self.do else [])
        kind = "" if self.opcode == dns.opcode.QUERY else f"{dns.opcode.to_text(self.opcode)} "
        flags = dns.flags.to_text(self.flags) or "-"
        return f"{kind}{self.name} {self.rtype} ({', '.join(how)}, flags {flags})"


def _ask(topology: Topology, question: Question, port: int) -> dns.message.Message:
    query = dns.message.make_query(question.name, question.rtype, use_edns=0 if question.edns else False,
                                   payload=1232, want_dnssec=question.do)
    query.flags = question.flags
    query.set_opcode(question.opcode)
    server = topology.server.ipv6 if question.ipv6 else topology.server.ipv4
    with in_netns(topology.client.netns):
        if question.tcp:
            return dns.query.tcp(query, server, port=port, timeout=3)
        # A plain socket, not dns.query.udp, which refuses answers that do not echo the
        # question (NSD's answer to a NOTIFY, for one): what comes back is what is compared.
        sock = socket.socket(socket.AF_INET6 if question.ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(3)
        sock.sendto(query.to_wire(), (server, port))
        return dns.message.from_wire(sock.recv(65535))


def _fields(message: dns.message.Message) -> dict[str, str]:
    """The parts of an answer two servers should agree on (not the ID)."""
    return {
        "rcode": dns.rcode.to_text(message.rcode()),
        "flags": dns.flags.to_text(message.flags),
        "answer": "; ".join(rrset.to_text() for rrset in message.answer),
        "authority": "; ".join(rrset.to_text() for rrset in message.authority),
        "additional": "; ".join(rrset.to_text() for rrset in message.additional),
        "edns": (f"version {message.edns}, payload {message.payload}, "
                 f"flags {dns.flags.edns_to_text(message.ednsflags) or '-'}, "
                 f"options {[option.to_text() for option in message.options]}")
        if message.edns >= 0 else "none",
    }


def compare(topology: Topology, questions: list[Question], nsd_port: int = NSD_PORT
            ) -> list[tuple[Question, str, str, str]]:
    """(question, field, our service's value, NSD's value) for every field that differs."""
    differences = []
    for question in questions:
        ours, theirs = _fields(_ask(topology, question, 53)), _fields(_ask(topology, question, nsd_port))
        differences += [(question, key, ours[key], theirs[key]) for key in ours if ours[key] != theirs[key]]
    return differences


QUESTIONS = [
    Question("www.lab.example"), Question("www.lab.example", edns=False),
    Question("WwW.LaB.ExAmPlE", "AAAA", ipv6=True), Question("many.lab.example", do=True),
    Question("www.lab.example", flags=dns.flags.RD | dns.flags.CD), Question("lab.example", "AAAA", flags=0),
    Question("nope.lab.example"), Question("mail.lab.example", "AAAA"), Question("www.lab.example", "MX"),
    Question("the.lab.example"), Question("lab.example", "SOA"), Question("lab.example", "NS"),
    Question("www.lab.example", "ANY"), Question("www.lab.example", tcp=True),
    Question("www.example.org"), Question("www.lab.example", opcode=dns.opcode.NOTIFY),
]
