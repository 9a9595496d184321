"""The DNS lab's user-space server: answers whatever the XDP fast path passes to the kernel.

It serves the same zone as the maps (bpflab.oracles.dns_records) over UDP and TCP, as an authoritative
server does: the records for names it holds, NODATA (NOERROR, no answer, the SOA) for other
types of a name that exists, NXDOMAIN for names that do not, REFUSED outside its zone or class,
FORMERR, NOTIMP and BADVERS for what it cannot parse, implement or speak. Every query it gets
is logged on stdout, which shows what XDP left to it. SIGHUP re-reads the records file.

Run inside the server namespace by `DnsServer` (by process id), or by hand:
    python -m bpflab.services.dns_server --records labs/xdp-dns/records.yaml --address 192.0.2.2
"""

from __future__ import annotations

import argparse
import signal
import socket
import socketserver
import sys
import threading
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.zone

from bpflab.oracles import dns_records
from bpflab.services.netns_server import NetnsServer

EDNS_PAYLOAD = 1232  # as the fast path advertises (dns.h)
PLAIN_UDP_LIMIT = 512


class Authority:
    """The answers of an authoritative server for one zone."""

    def __init__(self, records: dns_records.Records) -> None:
        self.origin = records.zone
        self.zone = dns_records.zone(records)

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
        response.flags = dns.flags.QR | (query.flags & dns.flags.RD)  # CD is not copied, as NSD does
        response.set_opcode(query.opcode())
        if query.edns >= 0:
            response.use_edns(0, query.ednsflags & dns.flags.DO, EDNS_PAYLOAD)
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return response
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN or not question.name.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)
            if query.edns >= 0:  # say why (RFC 8914), as NSD does
                response.use_edns(0, query.ednsflags & dns.flags.DO, EDNS_PAYLOAD,
                                  options=[dns.edns.EDEOption(dns.edns.EDECode.NOT_AUTHORITATIVE)])
            return response
        response.flags |= dns.flags.AA
        node = self.zone.get_node(question.name)
        if node is None:
            if not self._has_names_below(question.name):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self._add_soa(response)
            return response
        found = [r for r in node.rdatasets if question.rdtype in (r.rdtype, dns.rdatatype.ANY)]
        if question.rdtype == dns.rdatatype.ANY:
            found = found[:1]  # RFC 8482: one RRset is a complete answer to ANY, as NSD gives
        for rdataset in found:
            response.answer.append(_rrset(question.name, rdataset))
            if rdataset.rdtype == dns.rdatatype.NS:
                self._add_glue(response, rdataset)
        if not found:
            self._add_soa(response)
        return response

    def _has_names_below(self, name: dns.name.Name) -> bool:
        """An empty non-terminal (the.lab.example when a.deep.name.in.the... exists) exists."""
        return any(other != name and other.is_subdomain(name) for other in self.zone.nodes)

    def _add_glue(self, response: dns.message.Message, ns_rdataset) -> None:
        """The addresses of in-zone name servers, in the additional section (RFC 1034 4.3.2)."""
        for target in (rdata.target for rdata in ns_rdataset):
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                addresses = self.zone.get_rdataset(target, rdtype)
                if addresses is not None:
                    response.additional.append(_rrset(target, addresses))

    def _add_soa(self, response: dns.message.Message) -> None:
        soa = self.zone.find_rdataset(self.origin, dns.rdatatype.SOA)
        response.authority.append(_rrset(self.origin, soa))


def _rrset(name: dns.name.Name, rdataset) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)
    return rrset


def render(query_wire: bytes, authority: Authority, udp: bool) -> tuple[bytes, str]:
    """The answer's bytes and a log line about it. Over UDP the answer must fit 512 bytes, or
    the size the query's EDNS advertises; if it does not, it goes out empty with TC set."""
    try:
        query = dns.message.from_wire(query_wire)
    except dns.message.BadEDNS:
        return b"", "bad EDNS, dropped"
    except dns.exception.DNSException as err:
        return _formerr(query_wire), f"unparsable ({type(err).__name__}) -> FORMERR"
    if query.flags & dns.flags.QR:
        return b"", "a response, not a query: dropped (answering responses makes loops)"
    response = authority.answer(query)
    limit = max(PLAIN_UDP_LIMIT, query.payload if query.edns >= 0 else 0) if udp else 65535
    try:
        # In the records' order, as the fast path sends them (and NSD): no shuffling.
        wire = response.to_wire(max_size=limit, want_shuffle=False)
    except dns.exception.TooBig:
        response.answer.clear()
        response.authority.clear()
        response.flags |= dns.flags.TC
        wire = response.to_wire()
    question = query.question[0] if query.question else None
    asked = f"{question.name} {dns.rdatatype.to_text(question.rdtype)}" if question is not None else "(none)"
    return wire, f"{asked} -> {dns.rcode.to_text(response.rcode())}, {len(response.answer)} answer(s)"


def _formerr(query_wire: bytes) -> bytes:
    """FORMERR for a message too broken to parse, if it has at least an ID and is a query."""
    if len(query_wire) < 12 or query_wire[2] & 0x80:
        return b""
    return query_wire[:2] + bytes([0x80 | (query_wire[2] & 0x79), dns.rcode.FORMERR]) + bytes(8)


class _State:
    """The authority in use, replaced whole on reload so that no query sees half of one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.authority = Authority(dns_records.load(path))

    def reload(self) -> str:
        try:
            self.authority = Authority(dns_records.load(self.path))
        except dns_records.RecordsError as err:
            return f"reload refused, still serving the old records: {err}"
        return f"reloaded {self.path}"


_LOG_LOCK = threading.RLock()  # re-entrant: SIGHUP's handler may run while the main thread logs


def _log(line: str) -> None:
    """One whole line per query. Each query has its own thread, and `print` writes the text and
    its newline separately, so two threads could run their lines together (a CI run saw it)."""
    with _LOG_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _servers(state: _State, addresses: list[str], port: int) -> list[socketserver.BaseServer]:
    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            wire, said = render(data, state.authority, udp=True)
            if wire:
                sock.sendto(wire, self.client_address)
            _log(f"udp {self.client_address[0]} {said}")

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while (head := self.rfile.read(2)) and len(head) == 2:
                wire, said = render(self.rfile.read(int.from_bytes(head, "big")), state.authority, udp=False)
                if not wire:
                    return
                self.wfile.write(len(wire).to_bytes(2, "big") + wire)
                _log(f"tcp {self.client_address[0]} {said}")

    servers: list[socketserver.BaseServer] = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for base, handler in ((socketserver.ThreadingUDPServer, Udp), (socketserver.ThreadingTCPServer, Tcp)):
            server_class = type("Server", (base,), {"address_family": family, "allow_reuse_address": True,
                                                    "daemon_threads": True})
            servers.append(server_class((address, port), handler))
    return servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, default=dns_records.DEFAULT_RECORDS)
    parser.add_argument("--address", action="append", required=True, help="address to serve on (repeat)")
    parser.add_argument("--port", type=int, default=53)
    args = parser.parse_args(argv)
    state = _State(args.records)
    servers = _servers(state, args.address, args.port)
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.signal(signal.SIGHUP, lambda *_: _log(state.reload()))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _log(f"ready: serving {state.authority.origin} on {', '.join(args.address)} port {args.port}")
    threading.Event().wait()
    return 0


def start(netns: str, log: Path, records: Path = dns_records.DEFAULT_RECORDS,
          addresses: tuple[str, ...] = (), port: int = 53) -> NetnsServer:
    """Start the server in `netns`; stop it with `.stop()` (by its process id)."""
    argv = [sys.executable, "-m", "bpflab.services.dns_server", "--records", str(records),
            "--port", str(port)]
    for address in addresses:
        argv += ["--address", address]
    return NetnsServer(netns, argv, log, ready="ready:")


if __name__ == "__main__":
    sys.exit(main())
