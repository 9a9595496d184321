"""The programs for the guest's verifier, as BCC built them on the host, and their maps described so
the guest can make them again.

The programs are BCC-flavoured C that plain clang cannot build, and the guest has no BCC. So the
host loads each with the course's runtime, takes the very instructions BCC made (`dump_func`) and
reads from the host kernel the kind and sizes of every map those instructions load (an ld_imm64
of a map fd). The guest's loader (guest/xdp_loader.py) makes the same maps and writes their fds
into the instructions listed here. `describe` runs in worker processes while the guest boots.
"""

from __future__ import annotations

import base64
import ctypes
import struct
from dataclasses import dataclass
from pathlib import Path

from bpflab import libbpf
from bpflab.course.labs import BPF_TOOLS, program_labs
from bpflab.programs import BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, ProgramError
from bpflab.tools.vm.common import GUEST_IPV4, GUEST_IPV6, GUEST_MAC, SmokeError

LAB = "xdp-icmp"  # the lab whose reference is attached and pinged
# Checked by the guest's verifier besides the labs' references: the benchmark's tools, as
# (file in bpf/tools, entry, hook, cflags). 75 is the length of bench's query frame (www.lab.example,
# IPv4).
TOOLS = (("dns_query_generator.c", "dns_query_generator", "xdp", ("-DQUERY_LEN=75",)),
         ("dns_reply_counter.c", "dns_reply_counter", "xdp", ()),
         ("helper_cost.c", "helper_cost", "tc", ("-DCALLS=4",)))
PROG_TYPES = {"xdp": BPF_PROG_TYPE_XDP, "tc": BPF_PROG_TYPE_SCHED_CLS}
LD_IMM64, BPF_PSEUDO_MAP_FD = 0x18, 1
INSN = struct.Struct("<BBhi")  # struct bpf_insn


@dataclass(frozen=True)
class Target:
    """A program for the guest's verifier; `attach` marks the echo that is attached and pinged."""

    source: Path
    entry: str
    hook: str
    cflags: tuple[str, ...] = ()
    attach: bool = False


def targets() -> list[Target]:
    """Every lab's reference, in course order, then the benchmark's tools."""
    labs = [Target(lab.reference, entry, lab.hook, attach=lab.id == LAB)
            for lab in program_labs() for entry in lab.entries]  # a gym: each exercise
    return labs + [Target(BPF_TOOLS / name, entry, hook, cflags) for name, entry, hook, cflags in TOOLS]


class MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (uapi/linux/bpf.h); the kernel fills as much as is asked."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16)]


def map_info(fd: int) -> MapInfo:
    info, size = MapInfo(), ctypes.c_uint32(ctypes.sizeof(MapInfo))
    if libbpf.lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        raise SmokeError(f"cannot read the map of fd {fd}")
    return info


def describe_maps(insns: bytes) -> list[dict]:
    """Each map the instructions load (ld_imm64 of a map fd): its kind and sizes, and where it is used."""
    users: dict[int, list[int]] = {}
    for index in range(len(insns) // INSN.size):
        code, regs, _, imm = INSN.unpack_from(insns, index * INSN.size)
        if code == LD_IMM64 and regs >> 4 == BPF_PSEUDO_MAP_FD:
            users.setdefault(imm, []).append(index)
    maps = []
    for fd, where in users.items():
        info = map_info(fd)
        if info.map_flags:
            raise SmokeError(f"map {info.name.decode()} has flags {info.map_flags:#x}: not supported here")
        maps.append({"name": info.name.decode(), "type": info.type, "key_size": info.key_size,
                     "value_size": info.value_size, "max_entries": info.max_entries, "insns": where})
    return maps


def describe(target: Target) -> dict:
    """A program as BCC compiles it: instructions, maps, and for the echo the guest's `server` value.

    Runs in a worker process: what it raises must pickle, so the host's refusal is a SmokeError.
    """
    from bpflab.oracles.echo import configure  # scapy and BCC load only when a run needs them
    from bpflab.programs import load

    try:
        program = load(target.source, target.entry, target.hook, target.cflags)
    except ProgramError as err:
        raise SmokeError(f"the host could not load {target.source.name}: {err.explain()}") from None
    try:
        insns = program.bpf.dump_func(target.entry.encode())
        description = {"name": target.entry, "prog_type": PROG_TYPES[target.hook], "license": "GPL",
                       "insns": base64.b64encode(insns).decode(), "maps": describe_maps(insns),
                       "attach": target.attach}
        if target.attach:
            configure(program, GUEST_IPV4, GUEST_IPV6, GUEST_MAC)  # the runtime's own packing
            description["server"] = bytes(program.table("server")[ctypes.c_int(0)]).hex()
    finally:
        program.close()
    return description
