"""The DNS lab's records: one YAML file, read by the XDP maps, the user-space server and NSD.

The file (labs/xdp-dns/records.yaml is the course's) names a zone, a TTL and, per name, the
addresses of each type:

    zone: lab.example.
    ttl: 300
    records:
      www: {A: [192.0.2.80, 192.0.2.81], AAAA: ["2001:db8::80"]}
      "@": {A: [192.0.2.2]}          # "@" is the zone itself; "x.lab.example." is absolute

Everything is checked before anything is used, so a bad file changes nothing: `RecordsError`
says which name or address is wrong and why. The limits are the fast path's (bpf/include/dns.h):
names up to MAX_NAME_LEN wire bytes, MAX_ADDRS addresses per name and type.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.zone
import yaml

from bpflab import libbpf
from bpflab.course.labs import LABS_DIR

DEFAULT_RECORDS = LABS_DIR / "xdp-dns" / "records.yaml"
TYPES = {"A": (1, ipaddress.IPv4Address), "AAAA": (28, ipaddress.IPv6Address)}
MAX_NAME_LEN = 128  # as in dns.h
MAX_ADDRS = 8
MAX_RECORDS = 1024  # entries of the `records` map, as in xdp_dns.c
MAX_TTL = 2**31 - 1  # RFC 2181
KEY = struct.Struct(f"=H{MAX_NAME_LEN}s")  # struct dns_key: qtype, name
VALUE = struct.Struct(f"=II{MAX_ADDRS * 16}s")  # struct dns_rrset: ttl, count, addrs


class RecordsError(ValueError):
    """A records file or change that cannot be used, with the reason in plain words."""


@dataclass(frozen=True)
class Records:
    """A zone's address records: (absolute name, type) -> addresses, in the file's order."""

    zone: dns.name.Name
    ttl: int
    rrsets: dict[tuple[dns.name.Name, str], tuple[str, ...]] = field(default_factory=dict)

    def names(self) -> list[dns.name.Name]:
        return list(dict.fromkeys(name for name, _ in self.rrsets))


def absolute(zone: dns.name.Name, text: str) -> dns.name.Name:
    """A name of the file ("www", "@", "x.lab.example.") as an absolute name in the zone."""
    try:
        name = zone if text == "@" else dns.name.from_text(text, origin=zone)
    except dns.exception.DNSException as err:
        raise RecordsError(f"{text!r} is not a valid DNS name: {err}") from None
    if not name.is_subdomain(zone):
        raise RecordsError(f"{name} is outside the zone {zone}")
    if len(name.to_wire()) > MAX_NAME_LEN:
        raise RecordsError(f"{name} is {len(name.to_wire())} bytes long on the wire; the "
                           f"fast path's map keys hold at most {MAX_NAME_LEN}")
    return name


def checked_addresses(name: dns.name.Name, rtype: str, addresses: object) -> tuple[str, ...]:
    """The addresses of one record set, normalised, or RecordsError saying what is wrong."""
    if rtype not in TYPES:
        raise RecordsError(f"{name}: type {rtype!r} is not served; use A or AAAA")
    if isinstance(addresses, str):
        addresses = [addresses]
    if not isinstance(addresses, list) or not addresses:
        raise RecordsError(f"{name} {rtype}: give one address or a list of them")
    if len(addresses) > MAX_ADDRS:
        raise RecordsError(f"{name} {rtype}: {len(addresses)} addresses; at most {MAX_ADDRS}")
    family = TYPES[rtype][1]
    normalised = []
    for text in addresses:
        try:
            normalised.append(str(family(str(text))))
        except ValueError:
            raise RecordsError(f"{name} {rtype}: {text!r} is not an {'IPv4' if rtype == 'A' else 'IPv6'} "
                               "address") from None
    if len(set(normalised)) != len(normalised):
        raise RecordsError(f"{name} {rtype}: an address is listed twice")
    return tuple(normalised)


def parse(data: object) -> Records:
    """Records from the file's YAML structure, every part checked."""
    if not isinstance(data, dict) or "zone" not in data:
        raise RecordsError("the records file must be a mapping with 'zone', 'ttl' and 'records'")
    try:
        zone = dns.name.from_text(str(data["zone"]))
    except dns.exception.DNSException as err:
        raise RecordsError(f"zone {data['zone']!r} is not a valid DNS name: {err}") from None
    ttl = data.get("ttl", 300)
    if not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
        raise RecordsError(f"ttl must be a whole number of seconds from 0 to {MAX_TTL}, not {ttl!r}")
    entries = data.get("records") or {}
    if not isinstance(entries, dict):
        raise RecordsError("'records' must map names to {A: [...], AAAA: [...]}")
    records = Records(zone, ttl)
    for text, types in entries.items():
        name = absolute(zone, str(text))
        if not isinstance(types, dict) or not types:
            raise RecordsError(f"{name}: give its addresses as {{A: [...], AAAA: [...]}}")
        for rtype, addresses in types.items():
            if (name, rtype) in records.rrsets:
                raise RecordsError(f"{name} {rtype} is listed twice")
            records.rrsets[(name, rtype)] = checked_addresses(name, str(rtype), addresses)
    if len(records.rrsets) > MAX_RECORDS:
        raise RecordsError(f"{len(records.rrsets)} record sets; the map holds {MAX_RECORDS}")
    return records


def load(path: Path = DEFAULT_RECORDS) -> Records:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise RecordsError(f"{path} is not valid YAML: {err}") from None
    return parse(data)


def to_data(records: Records) -> dict:
    """The YAML structure of `records` (names relative to the zone)."""
    entries: dict[str, dict[str, list[str]]] = {}
    for (name, rtype), addresses in records.rrsets.items():
        label = "@" if name == records.zone else name.relativize(records.zone).to_text()
        entries.setdefault(label, {})[rtype] = list(addresses)
    return {"zone": records.zone.to_text(), "ttl": records.ttl, "records": entries}


def save(records: Records, path: Path = DEFAULT_RECORDS) -> None:
    """Write the file atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    text = yaml.safe_dump(to_data(records), sort_keys=False)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def with_added(records: Records, name: str, rtype: str, addresses: list[str]) -> Records:
    """A copy with addresses added to a record set (made if new), all checked."""
    owner = absolute(records.zone, name)
    old = records.rrsets.get((owner, rtype), ())
    rrsets = dict(records.rrsets)
    rrsets[(owner, rtype)] = checked_addresses(owner, rtype, [*old, *addresses])
    return parse(to_data(Records(records.zone, records.ttl, rrsets)))


def without(records: Records, name: str, rtype: str | None = None,
            address: str | None = None) -> Records:
    """A copy without a name (or one of its types, or one address of it)."""
    owner = absolute(records.zone, name)
    rrsets = dict(records.rrsets)
    doomed = [key for key in rrsets if key[0] == owner and rtype in (None, key[1])]
    if not doomed:
        raise RecordsError(f"{owner}{' ' + rtype if rtype else ''} is not in the records")
    for key in doomed:
        if address is None:
            del rrsets[key]
            continue
        kept = tuple(a for a in rrsets[key] if a != str(ipaddress.ip_address(address)))
        if len(kept) == len(rrsets[key]):
            raise RecordsError(f"{owner} {key[1]} has no address {address}")
        if kept:
            rrsets[key] = kept
        else:
            del rrsets[key]
    return Records(records.zone, records.ttl, rrsets)


def map_key(name: dns.name.Name, rtype: str) -> bytes:
    """The `records` map key: type, then the name in wire format, lower-cased, zero-filled."""
    return KEY.pack(TYPES[rtype][0], name.canonicalize().to_wire())


def map_value(ttl: int, addresses: tuple[str, ...]) -> bytes:
    packed = b"".join(ipaddress.ip_address(a).packed.ljust(16, b"\0") for a in addresses)
    return VALUE.pack(ttl, len(addresses), packed)


def map_entries(records: Records) -> dict[bytes, bytes]:
    return {map_key(name, rtype): map_value(records.ttl, addresses)
            for (name, rtype), addresses in records.rrsets.items()}


def sync_map(map_fd: int, records: Records) -> tuple[int, int]:
    """Make the `records` map hold exactly `records`: (entries written, entries removed).

    New and changed entries are written first and stale ones removed last, so a name that
    stays in the records is answered throughout the update.
    """
    wanted = map_entries(records)
    for key, value in wanted.items():
        libbpf.map_update(map_fd, key, value)
    stale = [key for key in libbpf.map_keys(map_fd, KEY.size) if key not in wanted]
    for key in stale:
        libbpf.map_delete(map_fd, key)
    return len(wanted), len(stale)


def zone_text(records: Records) -> str:
    """The zone in master-file format, SOA and NS included: what NSD and the user-space
    server load, so that both serve exactly what the maps hold."""
    lines = [
        f"$ORIGIN {records.zone}",
        f"$TTL {records.ttl}",
        f"@ IN SOA ns hostmaster 1 3600 900 604800 {records.ttl}",
        "@ IN NS ns",
    ]
    for (name, rtype), addresses in records.rrsets.items():
        lines += [f"{name} IN {rtype} {address}" for address in addresses]
    return "\n".join(lines) + "\n"


def zone(records: Records) -> dns.zone.Zone:
    return dns.zone.from_text(zone_text(records), origin=records.zone, relativize=False)
