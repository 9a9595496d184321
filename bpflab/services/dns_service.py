"""A running DNS service: the XDP fast path on the server's veth and the user-space server behind
it, both serving one records file, and the live changes of that file.

A service registers itself in /run/bpflab/dns/ (its records file, where its `records` map is
pinned in bpffs, the user-space server's pid), so that `python -m bpflab dns-records` (another
process) can change the file and then every running service that serves it: it rewrites the
pinned map and sends the user-space server SIGHUP. Pins and registrations of services whose
process died are removed by the next service or CLI run, like the namespaces of killed runs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from bpflab import libbpf
from bpflab.attach import attach
from bpflab.oracles import dns_records, echo
from bpflab.processes import pid_alive
from bpflab.programs import Program
from bpflab.services import dns_server
from bpflab.services.netns_server import NetnsServer
from bpflab.topology import Topology

RUN_DIR = Path("/run/bpflab/dns")
PIN_DIR = Path("/sys/fs/bpf")
_counter = itertools.count()


@dataclass(frozen=True)
class Registration:
    """What another process needs to change a running service."""

    owner: int  # pid of the process that runs the service
    records: str  # the records file it serves (absolute)
    pin: str  # where its `records` map is pinned
    server_pid: int  # the user-space server

    @classmethod
    def read(cls, path: Path) -> Registration:
        return cls(**json.loads(path.read_text()))


def registrations() -> list[Registration]:
    """Services whose process is alive; those of dead processes are removed on the way."""
    alive = []
    for path in sorted(RUN_DIR.glob("*.json")) if RUN_DIR.exists() else []:
        try:
            entry = Registration.read(path)
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if pid_alive(entry.owner):
            alive.append(entry)
        else:
            Path(entry.pin).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
    return alive


class DnsService:
    """Start with `with DnsService(program, topology):` or `.start()`; `.stop()` undoes all."""

    def __init__(self, program: Program, topology: Topology, records: Path = dns_records.DEFAULT_RECORDS,
                 log: Path | None = None) -> None:
        self.program, self.topology = program, topology
        self.records_path = Path(records).resolve()
        tag = f"{os.getpid()}-{next(_counter)}"
        self.registration_path = RUN_DIR / f"{tag}.json"
        self.pin = PIN_DIR / f"bpflab-dns-{tag}"
        self.log = log or RUN_DIR / f"{tag}.log"
        self.userspace: NetnsServer | None = None

    def start(self) -> DnsService:
        registrations()  # removes what killed runs left
        records = dns_records.load(self.records_path)
        echo.configure(self.program, self.topology.server.ipv4, self.topology.server.ipv6,
                       self.topology.server.mac)
        map_fd = self.program.table("records").map_fd
        dns_records.sync_map(map_fd, records)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        try:
            attach(self.program, self.topology.server.netns, self.topology.server.ifname)
            self.userspace = dns_server.start(self.topology.server.netns, self.log, self.records_path,
                                              (self.topology.server.ipv4, self.topology.server.ipv6))
            libbpf.obj_pin(map_fd, str(self.pin))
            entry = Registration(os.getpid(), str(self.records_path), str(self.pin), self.userspace.pid)
            self.registration_path.write_text(json.dumps(entry.__dict__))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.registration_path.unlink(missing_ok=True)
        self.pin.unlink(missing_ok=True)
        if self.userspace is not None:
            self.userspace.stop()
            self.userspace = None

    def __enter__(self) -> DnsService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def apply(path: Path, records: dns_records.Records) -> list[str]:
    """Save `records` to `path`, then bring every service serving that file up to date.

    `records` has been checked whole before this is called (dns_records raises on any error),
    so nothing is half-applied: either the file and the services change, or nothing does.
    """
    path = Path(path).resolve()
    dns_records.save(records, path)
    done = [f"wrote {path} ({len(records.rrsets)} record sets)"]
    for entry in registrations():
        if entry.records != str(path):
            continue
        fd = libbpf.obj_get(entry.pin)
        try:
            written, removed = dns_records.sync_map(fd, records)
        finally:
            os.close(fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry.server_pid, signal.SIGHUP)
        done.append(f"service of pid {entry.owner}: map {written} written, {removed} removed; "
                    f"user-space server {entry.server_pid} reloading")
    return done


def records_command(path: Path, action: str, name: str | None, rtype: str | None,
                    addresses: list[str]) -> int:
    """`python -m bpflab dns-records ...`: list, load (after a hand edit), add or del."""
    try:
        records = dns_records.load(path)
        if action == "list":
            for (owner, kind), held in records.rrsets.items():
                print(f"{owner!s:40} {records.ttl:6} {kind:5} {' '.join(held)}")
            for entry in registrations():
                if entry.records == str(Path(path).resolve()):
                    print(f"# served by pid {entry.owner} (user-space server {entry.server_pid})")
            return 0
        if action == "add":
            if not (name and rtype and addresses):
                raise dns_records.RecordsError("add needs NAME TYPE ADDRESS [ADDRESS ...]")
            records = dns_records.with_added(records, name, rtype.upper(), addresses)
        elif action == "del":
            if not name:
                raise dns_records.RecordsError("del needs NAME [TYPE [ADDRESS]]")
            records = dns_records.without(records, name, rtype.upper() if rtype else None,
                                          addresses[0] if addresses else None)
    except (dns_records.RecordsError, ValueError, OSError) as err:
        print(f"dns-records: {err}; nothing was changed", file=sys.stderr)
        return 2
    for line in apply(path, records):
        print(line)
    return 0
