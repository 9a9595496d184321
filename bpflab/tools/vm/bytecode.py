"""The programs for the guest's verifier, as BCC built them on the host, and their maps described so
the guest can make them again.

The programs are BCC-flavoured C that plain clang cannot build, and the guest has no BCC. So the
host compiles each file once with the course's runtime, loads each of its entries at its own hook
(a lab's parts: `Lab.hook_of`), takes the very instructions BCC made (`dump_func`) and reads from
the host kernel the kind and sizes of every map those instructions load (an ld_imm64 of a map fd).
The entries of one file share its maps, as in the course's runtime (tcp-state's `flow_states` is
written by its sock_ops part and read by an XDP part), so each map is named by its file (`object`)
and its host id: the guest's loader (guest/xdp_loader.py) makes each such map once and writes its
fd into the instructions listed here, in every program that uses it. `describe` runs in worker
processes while the guest boots.
"""

from __future__ import annotations

import base64
import ctypes
import struct
from dataclasses import dataclass
from pathlib import Path

from bpflab import libbpf
from bpflab.course.labs import BPF_TOOLS, program_labs
from bpflab.programs import BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, Compiled, ProgramError, compile_source
from bpflab.tools.vm.common import GUEST_IPV4, GUEST_IPV6, GUEST_MAC, SmokeError

LAB = "xdp-icmp"  # the lab whose reference is attached and pinged
# Checked by the guest's verifier besides the labs' references: the tools of the bench and of the
# checks, as (file in bpf/tools, entry, hook, cflags). 75 is the length of bench's query frame
# (www.lab.example, IPv4).
TOOLS = (("dns_query_generator.c", "dns_query_generator", "xdp", ("-DQUERY_LEN=75",)),
         ("dns_reply_counter.c", "dns_reply_counter", "xdp", ()),
         ("helper_cost.c", "helper_cost", "tc", ("-DCALLS=4",)),
         ("tcp_dropper.c", "tcp_dropper", "xdp", ()))
BPF_PROG_TYPE_SOCK_OPS = 13  # include/uapi/linux/bpf.h (bpflab.programs names only XDP's and TC's)
PROG_TYPES = {"xdp": BPF_PROG_TYPE_XDP, "tc": BPF_PROG_TYPE_SCHED_CLS, "sock_ops": BPF_PROG_TYPE_SOCK_OPS}
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

    @property
    def object(self) -> str:
        """What BCC compiles once, and whose maps its entries share: the file with its flags."""
        return " ".join((self.source.name, *self.cflags))


def targets() -> list[Target]:
    """Every lab's reference, in course order, each entry at its own hook, then the benchmark's tools."""
    labs = [Target(lab.reference, entry, lab.hook_of(entry), attach=lab.id == LAB)
            for lab in program_labs() for entry in lab.entries]  # a gym's exercises, a lab's parts
    return labs + [Target(BPF_TOOLS / name, entry, hook, cflags) for name, entry, hook, cflags in TOOLS]


def objects(programs: list[Target]) -> list[tuple[Target, ...]]:
    """The targets grouped by object, in their order: one BCC compile (about 4 s) serves them all,
    and its maps are the ones they share."""
    groups: dict[str, list[Target]] = {}
    for target in programs:
        groups.setdefault(target.object, []).append(target)
    return [tuple(group) for group in groups.values()]


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
        maps.append({"name": info.name.decode(), "id": info.id, "type": info.type, "key_size": info.key_size,
                     "value_size": info.value_size, "max_entries": info.max_entries, "insns": where})
    return maps


def describe(group: tuple[Target, ...]) -> list[dict]:
    """One object's programs as a single BCC compile makes them: see `describe_program`.

    Runs in a worker process: what it raises must pickle, so the host's refusal is a SmokeError.
    """
    first = group[0]
    try:
        compiled = compile_source(first.source, first.hook, first.cflags)
    except ProgramError as err:
        raise SmokeError(f"the host could not compile {first.object}: {err.explain()}") from None
    try:
        return [describe_program(compiled, target) for target in group]
    finally:
        compiled.bpf.cleanup()  # the maps and every program of the object


def describe_program(compiled: Compiled, target: Target) -> dict:
    """A program of `compiled`, loaded at its hook: instructions, maps (by host id: the same for
    every program of the object that uses one), and for the echo the guest's `server` value."""
    from bpflab.oracles.echo import configure  # scapy loads only when a run needs it

    try:
        program = compiled.load(target.entry, owns_module=False, hook=target.hook)
    except ProgramError as err:
        why = err.explain()
        raise SmokeError(f"the host could not load {target.entry} of {target.object}: {why}") from None
    insns = compiled.bpf.dump_func(target.entry.encode())
    description = {"name": target.entry, "object": target.object, "prog_type": PROG_TYPES[target.hook],
                   "license": "GPL", "insns": base64.b64encode(insns).decode(), "maps": describe_maps(insns),
                   "attach": target.attach}
    if target.attach:
        configure(program, GUEST_IPV4, GUEST_IPV6, GUEST_MAC)  # the runtime's own packing
        description["server"] = bytes(program.table("server")[ctypes.c_int(0)]).hex()
    return description
