"""What the kernel lets root get away with, found in the program BCC built.

Root may read uninitialised stack, and a verdict that is no verdict is only found when the
program runs. A small data-flow pass over the disassembly BCC prints finds map keys never
written on some path (`uninitialised_keys`) and constants or addresses returned that are no
action of the hook (`stray_verdicts`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bpflab.explain.sourcemap import SourceMap, disassembly
from bpflab.verdicts import TC_VERDICTS, XDP_VERDICTS, verdict

MAP_HELPERS = {1: "bpf_map_lookup_elem", 2: "bpf_map_update_elem", 3: "bpf_map_delete_elem"}
FRAME_POINTER = 10
LD, LDX, ST, STX, ALU, ALU64 = 0, 1, 2, 3, 4, 7  # instruction classes
JMP, JMP32 = 5, 6
JA32, ATOMIC_MODE = 0x06, 0xC0
CALL, EXIT, JA, ADD64_IMM = 0x85, 0x95, 0x05, 0x07
MOV64_REG, MOV64_IMM, MOV32_REG, MOV32_IMM = 0xBF, 0xB7, 0xBC, 0xB4


# What a register may hold: (constant, where it was set) pairs, and whether it may also hold
# something else (a load, arithmetic, a helper's result). A constant is kept when it merges
# with "something else": the question is whether it *may* reach the exit.
Values = tuple[frozenset[tuple[int, int]], bool]
ANYTHING: Values = (frozenset(), True)
MAX_VALUES = 16  # more distinct constants than this in one register: it holds "anything"
REGISTERS = 11  # r0..r10
ATOMIC_FETCH, ATOMIC_CMPXCHG = 0x01, 0xF0  # in an atomic STX's imm (include/uapi/linux/bpf.h)


def successors(index: int, code: bytes, following: int | None) -> list[int]:
    """Where control goes after the instruction at `index` (`following` is the next one)."""
    if code[0] & 0x07 not in (JMP, JMP32) or code[0] == CALL:
        return [following] if following is not None else []
    if code[0] == EXIT:
        return []
    if code[0] == JA32:  # gotol: its offset is in imm
        return [index + 1 + int.from_bytes(code[4:8], "little", signed=True)]
    target = index + 1 + int.from_bytes(code[2:4], "little", signed=True)
    return [target] if code[0] == JA else [n for n in (following, target) if n is not None]


def written_register(code: bytes) -> int | None:
    """The register an instruction overwrites with something other than a constant or a copy."""
    opcode, dst, src = code[0], code[1] & 0xF, code[1] >> 4
    kind = opcode & 0x07
    if kind in (LD, LDX, ALU, ALU64):
        return dst
    if kind == STX and opcode & 0xE0 == ATOMIC_MODE:
        imm = int.from_bytes(code[4:8], "little")
        if imm == ATOMIC_CMPXCHG:
            return 0
        if imm & ATOMIC_FETCH:
            return src
    return None


def transfer(state: tuple[Values, ...], index: int, code: bytes) -> tuple[Values, ...]:
    """Which constants each register may hold after the instruction."""
    regs = list(state)
    opcode, dst, src = code[0], code[1] & 0xF, code[1] >> 4
    if opcode in (MOV64_IMM, MOV32_IMM) and dst < REGISTERS:
        regs[dst] = (frozenset({(int.from_bytes(code[4:8], "little", signed=True), index)}), False)
    elif opcode in (MOV64_REG, MOV32_REG) and dst < REGISTERS:
        regs[dst] = regs[src] if src < REGISTERS else ANYTHING
    elif opcode == CALL:
        regs[0:6] = [ANYTHING] * 6
    elif (register := written_register(code)) is not None and register < REGISTERS:
        regs[register] = ANYTHING
    return tuple(regs)


def merge(a: Values, b: Values) -> Values:
    """Both paths' constants, each value once (where it was first set), and "anything" if either."""
    first: dict[int, int] = {}
    for value, index in sorted(a[0] | b[0], key=lambda pair: pair[1]):
        first.setdefault(value, index)
    return (frozenset(first.items()), a[1] or b[1]) if len(first) <= MAX_VALUES else ANYTHING


State = tuple  # an analysis's facts before one instruction


def flow(insns: dict[int, tuple[bytes, int]], start: State, step: Callable[[State, int, bytes], State],
         meet: Callable[[State, State], State]) -> dict[int, State]:
    """A forward data-flow pass over one function: the facts that hold before each instruction.

    `step` gives the facts after an instruction, `meet` joins the facts of two paths that meet;
    the pass repeats until nothing changes (loops included). Paths the verifier would find
    impossible are not told apart.
    """
    if not insns:
        return {}
    order = sorted(insns)
    following = dict(zip(order, [*order[1:], None], strict=True))
    states: dict[int, State] = {order[0]: start}
    work = [order[0]]
    while work:
        index = work.pop()
        code = insns[index][0]
        after = step(states[index], index, code)
        for target in successors(index, code, following[index]):
            if target not in insns:
                continue
            old = states.get(target)
            new = after if old is None else meet(old, after)
            if new != old:
                states[target] = new
                work.append(target)
    return states


def returned_constants(insns: dict[int, tuple[bytes, int]]) -> set[tuple[int, int]]:
    """The constants the function may return, each with the instruction that set it.

    Constants flow through register moves and merge where paths meet; anything else (a load,
    arithmetic, a helper's result) is "anything".
    """
    states = flow(insns, (ANYTHING,) * REGISTERS, transfer,
                  lambda a, b: tuple(merge(x, y) for x, y in zip(a, b, strict=True)))
    returned: set[tuple[int, int]] = set()
    for index, state in states.items():
        if insns[index][0][0] == EXIT:
            returned |= state[0][0]
    return returned


# Where a context holds packet pointers (data, data_end, data_meta): struct xdp_md and struct
# __sk_buff in include/uapi/linux/bpf.h. A load from there gives an address, not a number.
CONTEXT_POINTERS = {"xdp": {0, 4, 8}, "tc": {76, 80, 140}}
ADD, SUB, ALU_OP, SIZE_DW = 0x00, 0x10, 0xF0, 0x18
CONTEXT = -1  # marks the context pointer itself (r1 at entry) and its copies
# Per register r0..r10, then per stack slot (offset from r10): the instructions that may have put
# an address there.
Origins = frozenset[int]
Pointers = tuple[tuple[Origins, ...], frozenset[tuple[int, Origins]]]


def pointer_step(hook: str) -> Callable[[Pointers, int, bytes], Pointers]:
    """The transfer function of `returned_pointers` for a program of `hook`."""
    context_fields = CONTEXT_POINTERS.get(hook, set())

    def step(state: Pointers, index: int, code: bytes) -> Pointers:
        regs, stack = list(state[0]), dict(state[1])
        opcode, dst, src = code[0], code[1] & 0xF, code[1] >> 4
        offset = int.from_bytes(code[2:4], "little", signed=True)
        kind = opcode & 0x07
        if dst >= REGISTERS or src >= REGISTERS:
            return state
        if opcode in (MOV64_REG, MOV32_REG):  # a copy, even truncated to 32 bits, is still an address
            regs[dst] = (regs[src] & {CONTEXT}) | {index} if regs[src] else frozenset()
        elif kind in (ALU, ALU64) and opcode & ALU_OP in (ADD, SUB) and regs[dst]:
            regs[dst] = frozenset({index})  # an address plus or minus a number
        elif kind == LDX and src == FRAME_POINTER and opcode & SIZE_DW == SIZE_DW:
            regs[dst] = stack.get(offset, frozenset())  # a spilled register, loaded back
        elif kind == LDX:
            loads_address = CONTEXT in regs[src] and offset in context_fields
            regs[dst] = frozenset({index}) if loads_address else frozenset()
        elif kind == STX and dst == FRAME_POINTER and opcode & 0xE0 != ATOMIC_MODE:
            stack[offset] = regs[src] if opcode & SIZE_DW == SIZE_DW else frozenset()
        elif kind == ST and dst == FRAME_POINTER:
            stack[offset] = frozenset()
        elif opcode == CALL:
            regs[0:6] = [frozenset()] * 6
            if src == 0 and int.from_bytes(code[4:8], "little") == 1:  # bpf_map_lookup_elem: a map
                regs[0] = frozenset({index})                            # value's address
        elif opcode in (MOV64_IMM, MOV32_IMM):
            regs[dst] = frozenset()
        elif (register := written_register(code)) is not None and register < REGISTERS:
            regs[register] = frozenset()
        return tuple(regs), frozenset((slot, origins) for slot, origins in stack.items() if origins)
    return step


def meet_pointers(a: Pointers, b: Pointers) -> Pointers:
    """Either path's addresses, in registers and in stack slots."""
    stack = dict(a[1])
    for slot, origins in b[1]:
        stack[slot] = stack.get(slot, frozenset()) | origins
    return tuple(x | y for x, y in zip(a[0], b[0], strict=True)), frozenset(stack.items())


def returned_pointers(insns: dict[int, tuple[bytes, int]], hook: str) -> list[int]:
    """The exits where the function may return an address (a packet pointer, a map value's, the
    context): root may, and the hook reads it as a meaningless number. Registers and 8-byte
    stack slots (spills) are followed."""
    context = frozenset({CONTEXT})
    start = ((frozenset(), context, *[frozenset()] * 9), frozenset())
    states = flow(insns, start, pointer_step(hook), meet_pointers)
    return sorted(index for index, state in states.items()
                  if insns[index][0][0] == EXIT and state[0][0] - context)


# A `return` of something that is neither a constant, a number nor a call: `return (long)eth;`.
RETURNS_A_VALUE = re.compile(r"\breturn\s+(?![A-Z_0-9]+\s*;)(?!-?\d+\s*;)(?!\w+\s*\()[^;]+;")


def stray_verdicts(compile_log: str, smap: SourceMap, hook: str, entry: str) -> list[str]:
    """Constants the entry function returns that are no verdict of its hook (`return 7;`).

    The kernel loads such a program, and drops what it returns them for (XDP), or lets the
    next filter decide (TC): a mistake only the behaviour would show, late.
    """
    if hook not in ("xdp", "tc"):  # sock_ops and its like: the return value is no verdict
        return []
    insns = disassembly(compile_log, entry)
    names = XDP_VERDICTS if hook == "xdp" else TC_VERDICTS
    found = []
    for value, index in sorted(returned_constants(insns)):
        if value in names:
            continue
        written = re.compile(rf"\breturn\s+\(?{value}\)?\s*;")  # the line that says it, if one does
        line = next((n for n in smap.function_lines(entry) if written.search(smap.lines[n - 1])), None)
        found.append(f"warning: the program returns {verdict(hook, value)}\n"
                     f"at {smap.where(line or smap.line(insns[index][1]))}")
    actions = ("XDP_PASS, XDP_TX, XDP_DROP" if hook == "xdp"
               else "TC_ACT_OK, TC_ACT_SHOT, bpf_redirect()'s value")
    for index in returned_pointers(insns, hook)[:1]:  # one warning says it
        lines = smap.function_lines(entry)
        line = next((n for n in lines if RETURNS_A_VALUE.search(smap.lines[n - 1])), None)
        found.append(f"warning: the program may return an address (a pointer) as its verdict: the hook "
                     f"reads it as a number that is no action, and the frame is lost. Return one of "
                     f"{actions}\nat {smap.where(line or smap.line(insns[index][1]))}")
    return found


def uninitialised_keys(compile_log: str, smap: SourceMap, entry: str) -> list[str]:
    """Map keys passed from stack bytes that are not written on every path to the call.

    The verifier lets root pass uninitialised stack to a helper, so `__u32 key;` looks up
    whatever was there before: a program that loads and then misbehaves. The pass tracks which
    registers point into the stack (r10, or copies of it moved by constants) and which stack
    bytes are written on every path: by a store, or by a helper given a stack buffer. A map
    helper's key (r2) whose first byte is not is reported. A program with bpf-to-bpf calls
    (a frame each) is not checked.
    """
    insns = disassembly(compile_log, entry)
    if any(code[0] == CALL and code[1] >> 4 == 1 for code, _ in insns.values()):
        return []
    states = flow(insns, (frozenset(), frozenset()), stack_writes, meet_writes)
    found = []
    for index, (written, pointers) in sorted(states.items()):
        code, line = insns[index]
        key = dict(pointers).get(2)
        if code[0] == CALL and code[1] >> 4 == 0 and int.from_bytes(code[4:8], "little") in MAP_HELPERS \
                and key is not None and key not in written:
            helper = MAP_HELPERS[int.from_bytes(code[4:8], "little")]
            found.append(f"warning: the key given to {helper}() is not written on every path before "
                         "it: there it is whatever the stack held before, so the lookup finds nothing or "
                         "the wrong entry. Initialise it (`__u32 key = 0;`)\n"
                         f"at {smap.where(smap.line(line))}")
    return found


def stack_writes(state: State, index: int, code: bytes) -> State:
    """After one instruction: (stack bytes written on every path, registers -> stack offset)."""
    written, pointers = set(state[0]), dict(state[1])
    opcode, dst, src = code[0], code[1] & 0xF, code[1] >> 4
    offset = int.from_bytes(code[2:4], "little", signed=True)
    imm = int.from_bytes(code[4:8], "little", signed=True)
    kind = opcode & 0x07
    if opcode == CALL:
        for register in range(1, 6):  # a helper may fill any stack buffer it is given
            if register in pointers:
                written.update(range(pointers[register], 0))
        for register in range(0, 6):
            pointers.pop(register, None)
    elif kind in (ST, STX) and (dst == FRAME_POINTER or dst in pointers):
        start = (0 if dst == FRAME_POINTER else pointers[dst]) + offset
        written.update(range(start, start + {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}[opcode & 0x18]))
    elif opcode == MOV64_REG and src == FRAME_POINTER:  # rX = r10
        pointers[dst] = 0
    elif opcode == MOV64_REG and src in pointers:
        pointers[dst] = pointers[src]
    elif opcode == ADD64_IMM and dst in pointers:  # rX += imm
        pointers[dst] += imm
    elif (register := written_register(code)) is not None:  # any other write to a register
        pointers.pop(register, None)
    return frozenset(written), frozenset(pointers.items())


def meet_writes(a: State, b: State) -> State:
    """Where two paths meet: written on both, and the stack pointers both agree on."""
    return a[0] & b[0], a[1] & b[1]
