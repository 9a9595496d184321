"""The Python side's copies of the BPF programs' constants agree with the C.

The runtime fills maps and builds expected answers from its own constants; a limit changed in
one language only would make the two disagree in ways that show up far from the cause.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bpflab.course.labs import BPF_DIR, BPF_INCLUDE, load_lab
from bpflab.oracles import dns_answers, dns_records, echo
from bpflab.programs import load

DEFINE = re.compile(r"^#define\s+(\w+)\s+(0x[0-9A-Fa-f]+|\d+)\b", re.MULTILINE)


def c_defines(*files: Path) -> dict[str, int]:
    """The integer-literal #defines of C files."""
    return {name: int(value, 0) for path in files for name, value in DEFINE.findall(path.read_text())}


DNS_C = c_defines(BPF_INCLUDE / "dns.h", BPF_DIR / "xdp_dns.c")
SERVER_C = c_defines(BPF_INCLUDE / "server.h")


@pytest.mark.parametrize(("name", "python"), [
    ("MAX_NAME_LEN", dns_records.MAX_NAME_LEN),
    ("MAX_ADDRS", dns_records.MAX_ADDRS),
    ("MAX_RECORDS", dns_records.MAX_RECORDS),
    ("MAX_QUERY_LEN", dns_answers.MAX_QUERY_LEN),
    ("MAX_EDNS_OPTIONS", dns_answers.MAX_EDNS_OPTIONS),
    ("MAX_LABEL_LEN", dns_answers.MAX_LABEL_LEN),
    ("EDNS_PAYLOAD", dns_answers.EDNS_PAYLOAD),
    ("DNS_PORT", dns_answers.DNS_PORT),
    ("DNS_QR", dns_answers.QR),
    ("DNS_OPCODE", dns_answers.OPCODE),
    ("DNS_AA", dns_answers.AA),
    ("DNS_TC", dns_answers.TC),
    ("DNS_RD", dns_answers.RD),
    ("EDNS_DO", dns_answers.EDNS_DO),
])
def test_dns_constants_match_the_c(name, python):
    assert DNS_C[name] == python, f"{name}: C says {DNS_C[name]}, Python {python}"


def test_reply_ttl_matches_the_c():
    """The echo and DNS references put server.h's REPLY_TTL in their replies; the expected
    replies the grader builds must too."""
    assert SERVER_C["REPLY_TTL"] == echo.REPLY_TTL == dns_answers.REPLY_TTL


def test_record_key_and_value_are_the_maps_sizes():
    """What dns_records writes is exactly what the kernel's `records` map was created with (the
    kernel copies value_size bytes from the buffer it is given, whatever its length)."""
    lab = load_lab("xdp-dns")
    program = load(lab.reference, lab.entry, lab.hook)
    try:
        fdinfo = Path(f"/proc/self/fdinfo/{program.table('records').map_fd}").read_text()
        kernel = {name: int(value) for name, value in re.findall(r"^(\w+):\s+(\d+)$", fdinfo, re.MULTILINE)}
        assert (kernel["key_size"], kernel["value_size"], kernel["max_entries"]) == \
            (dns_records.KEY.size, dns_records.VALUE.size, dns_records.MAX_RECORDS)
    finally:
        program.close()
