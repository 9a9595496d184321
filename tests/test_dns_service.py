"""The DNS service as a whole: records changed live by the CLI reach the XDP map and the
user-space server alike; bad changes change nothing; nothing is left behind."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import dns.message
import dns.opcode
import dns.query
import dns.rcode
import pytest

from bpflab.course.labs import ROOT, load_lab
from bpflab.oracles import dns_answers, dns_records
from bpflab.programs import load
from bpflab.services import dns_server
from bpflab.services.dns_service import RUN_DIR, DnsService, registrations
from bpflab.topology import Topology, in_netns


@pytest.fixture
def records_file(tmp_path):
    path = tmp_path / "records.yaml"
    shutil.copy(dns_records.DEFAULT_RECORDS, path)
    return path


def cli(records_file, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bpflab", "dns-records", "--file", str(records_file), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def ask(topo: Topology, name: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    with in_netns(topo.client.netns):
        return (dns.query.tcp if tcp else dns.query.udp)(query, topo.server.ipv4, timeout=2)


def addresses(reply: dns.message.Message) -> list[str]:
    return [r.address for rrset in reply.answer for r in rrset]


def wait_for_reload(service: DnsService, count: int) -> None:
    reloaded = service.userspace.wait_until(lambda output: output.count("reloaded") >= count, timeout=10)
    assert reloaded, service.userspace.output()


def test_records_change_live_in_the_map_and_the_user_space_server(records_file):
    lab = load_lab("xdp-dns")
    program = load(lab.reference, lab.entry, lab.hook)
    try:
        with Topology() as topo, DnsService(program, topo, records_file) as service:
            assert ask(topo, "ftp.lab.example").rcode() == dns.rcode.NXDOMAIN
            added = cli(records_file, "add", "ftp", "A", "192.0.2.21", "192.0.2.22")
            assert added.returncode == 0, added.stderr
            assert f"pid {service.registration_path.stem.split('-')[0]}" in added.stdout
            wait_for_reload(service, 1)
            before = dns_answers.answers(program).get(dns_answers.ANSWERS_A, 0)
            assert addresses(ask(topo, "ftp.lab.example")) == ["192.0.2.21", "192.0.2.22"]
            assert dns_answers.answers(program)[dns_answers.ANSWERS_A] == before + 1  # by XDP
            assert addresses(ask(topo, "ftp.lab.example", tcp=True)) == ["192.0.2.21", "192.0.2.22"]

            text = records_file.read_text()
            for bad in (["add", "ftp", "A", "192.0.2.300"], ["add", "ftp", "AAAA", "192.0.2.1"],
                        ["add", "bad..name", "A", "192.0.2.1"], ["add", "x.example.org.", "A", "192.0.2.1"],
                        ["del", "nothere"]):
                refused = cli(records_file, *bad)
                assert refused.returncode == 2 and "nothing was changed" in refused.stderr, bad
            assert records_file.read_text() == text

            assert cli(records_file, "del", "ftp").returncode == 0
            wait_for_reload(service, 2)
            assert ask(topo, "ftp.lab.example").rcode() == dns.rcode.NXDOMAIN
            assert ask(topo, "ftp.lab.example", tcp=True).rcode() == dns.rcode.NXDOMAIN
        assert not service.registration_path.exists() and not service.pin.exists()
    finally:
        program.close()


def test_registrations_of_dead_processes_are_removed():
    child = subprocess.Popen(["true"])
    child.wait()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    stale = RUN_DIR / f"{child.pid}-0.json"
    stale.write_text(json.dumps({"owner": child.pid, "records": "/x", "pin": "/sys/fs/bpf/none",
                                 "server_pid": child.pid}))
    assert all(entry.owner != child.pid for entry in registrations())
    assert not stale.exists()


def test_the_service_answers_like_nsd(tmp_path):
    """XDP plus the user-space server, seen from the client, against NSD on the same zone."""
    from bpflab.services import nsd

    lab = load_lab("xdp-dns")
    program = load(lab.reference, lab.entry, lab.hook)
    try:
        with Topology() as topo, DnsService(program, topo, log=tmp_path / "user-space.log"), \
                nsd.start(topo.server.netns, tmp_path / "nsd", dns_records.load(),
                          (topo.server.ipv4, topo.server.ipv6)) as server:
            differences = nsd.compare(topo, nsd.QUESTIONS)
            # The one known difference: a NOTIFY (RFC 1996, for secondaries) gets NOTIMP from
            # us and NXDOMAIN without EDNS from NSD, which is primary for the zone.
            unexpected = [d for d in differences if d[0].opcode != dns.opcode.NOTIFY]
            assert unexpected == [], "\n".join(f"{q}: {field}: ours {a!r}, NSD {b!r}"
                                                for q, field, a, b in unexpected)
            assert dns_answers.answers_sent(program) >= 6  # the fast path took part
        assert server.process.poll() is not None  # stopped, by its pid
    finally:
        program.close()


def test_the_user_space_server_logs_one_whole_line_per_query(tmp_path):
    """Each query is handled on its own thread; lines written at once must not run together
    (the grader counts them to see what XDP passed on)."""
    queries = 300
    records = dns_records.DEFAULT_RECORDS
    with Topology() as topo, dns_server.start(topo.server.netns, tmp_path / "log", records,
                                              addresses=(topo.server.ipv4,)) as server:
        with in_netns(topo.client.netns):  # sockets belong to the netns they were made in
            sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(queries)]

        def ask_with(i: int) -> int:
            query = dns.message.make_query(f"n{i}.lab.example", "A")
            with sockets[i]:
                return dns.query.udp(query, topo.server.ipv4, timeout=5, sock=sockets[i]).rcode()

        with ThreadPoolExecutor(max_workers=16) as pool:
            assert list(pool.map(ask_with, range(queries))) == [dns.rcode.NXDOMAIN] * queries

        def logged(output: str) -> list[str]:
            return [line for line in output.splitlines() if line.startswith("udp ")]

        server.wait_until(lambda output: len(logged(output)) >= queries, timeout=10)
        lines = logged(server.output())
        assert len(lines) == queries, server.output()
        assert all(line.endswith("NXDOMAIN, 0 answer(s)") for line in lines), server.output()
