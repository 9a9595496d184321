"""Why the compiler or the verifier refused a program, in words a student can act on.

Three things make the raw messages hard to use, and each has its answer here:

- *Where*: BCC compiles a rewritten copy of the program (`/virtual/main.c`, with its own
  prelude and `map.lookup()` turned into helper calls), so the line numbers in its messages are
  not the student's. `SourceMap` lines the rewritten copy (BCC prints it when asked) up with the
  student's file. The verifier's nearest `; code @ main.c:N` note may say line 0: walk back.
- *What to change*: `RULES` maps each common message to a hint, aware of the hook (a helper
  suggested at XDP must exist at XDP), naming the course's own helper where there is one.
- *What the kernel lets through*: root may read uninitialised stack, and a verdict that is no
  verdict is only found when the program runs. `uninitialised_keys` finds map keys that were
  never written; `verdict` names a return value that is no action of its hook.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bpflab.labs import BPF_INCLUDE
from bpflab.verdicts import TC_VERDICTS, XDP_VERDICTS

MAIN_FILE = "/virtual/main.c"  # what BCC calls the program file in its messages
PRELUDE = "#if defined(BPF_LICENSE)"  # the first line of BCC's rewritten program
FOOTER = "#include <bcc/footer.h>"  # and its last
STACK_LIMIT = 512  # bytes of BPF stack per program, subprograms included
WARNINGS_SHOWN = ("-Wuninitialized", "-Wsometimes-uninitialized")  # warnings that predict bugs


def verdict(hook: str, value: int) -> str:
    """`XDP_PASS`, or the number with why it is no verdict: the kernel drops such frames."""
    names = XDP_VERDICTS if hook == "xdp" else TC_VERDICTS
    if value in names:
        return names[value]
    if hook == "xdp":
        return (f"{value}, which is not an XDP action (XDP_ABORTED 0, XDP_DROP 1, XDP_PASS 2, XDP_TX 3, "
                "XDP_REDIRECT 4): the kernel treats it as XDP_ABORTED and drops the frame")
    return (f"{value}, which is not a TC action (TC_ACT_OK 0, TC_ACT_SHOT 2, TC_ACT_REDIRECT 7, ...): "
            "the kernel treats an unknown action as TC_ACT_UNSPEC")


class SourceMap:
    """Line numbers of BCC's messages turned into the student's own.

    BCC parses the student's file once as it is (clang's own errors and warnings carry its line
    numbers), then prints and compiles a rewritten copy: the LLVM back end's refusals and the
    verifier's notes count that copy's lines, which are lined up with the student's here.
    """

    def __init__(self, source: Path, compile_log: str) -> None:
        self.source = source
        self.compile_log = compile_log
        self.lines = source.read_text(errors="replace").splitlines()
        log = compile_log.splitlines()
        self.printed_at, self.rewritten = rewritten_program(log)
        self.to_original: dict[int, int] = {}
        matcher = difflib.SequenceMatcher(None, self.rewritten, self.lines, autojunk=False)
        for tag, r1, r2, o1, o2 in matcher.get_opcodes():
            if tag == "equal" or (tag == "replace" and r2 - r1 == o2 - o1):
                self.to_original.update({r1 + k + 1: o1 + k + 1 for k in range(r2 - r1)})
            elif tag == "replace":  # a rewrite that changed the number of lines: its first line
                self.to_original.update({r1 + k + 1: o1 + 1 for k in range(r2 - r1)})

    def line(self, main_line: int, code: str = "") -> int | None:
        """The student's line for the rewritten copy's `main_line`; by the code's text if unknown."""
        if main_line in self.to_original:
            return self.to_original[main_line]
        if code:
            return next((n for n, text in enumerate(self.lines, 1) if code in text), None)
        return None

    def diagnostic_line(self, main_line: int, log_index: int) -> int | None:
        """The student's line for a compiler message found at `log_index` of the compile log."""
        return main_line if log_index < self.printed_at else self.line(main_line)

    def definition(self, function: str) -> int | None:
        """The line where `function` is defined."""
        start = re.compile(rf"^\w[\w\s\*]*\b{re.escape(function)}\s*\(")
        return next((n for n, text in enumerate(self.lines, 1) if start.match(text)), None)

    def function_lines(self, function: str) -> range:
        """The lines (1-based) from `function`'s definition to its closing brace; all if unknown."""
        start = self.definition(function)
        if start is None:
            return range(1, len(self.lines) + 1)
        ends = (n for n, text in enumerate(self.lines, 1) if n > start and text.startswith("}"))
        return range(start, next(ends, len(self.lines)) + 1)

    def insn_lines(self, entry: str) -> dict[int, int]:
        """BCC's line of each instruction of function `entry`."""
        return {index: line for index, (_, line) in disassembly(self.compile_log, entry).items()}

    def where(self, line: int | None) -> str:
        """`file.c:N: the code`, as a student finds it in the editor."""
        if line is None or not 0 < line <= len(self.lines):
            return self.source.name
        return f"{self.source.name}:{line}: {self.lines[line - 1].strip()}"


def rewritten_program(log: list[str]) -> tuple[int, list[str]]:
    """Where BCC's rewritten program starts in the log (DEBUG_PREPROCESSOR), and its lines."""
    ends = [i for i, line in enumerate(log) if line.strip() == FOOTER]
    starts = [i for i, line in enumerate(log[: ends[-1]]) if line == PRELUDE] if ends else []
    if not starts:
        return len(log), []
    return starts[-1], log[starts[-1] : ends[-1] + 1]


# --- The verifier's messages -----------------------------------------------------------------

Hint = Callable[[re.Match[str], str], str]  # (the message matched, the hook) -> what to change

# Helpers of one hook and what the other hook offers instead (include/uapi/linux/bpf.h).
TC_ONLY = {
    "bpf_skb_pull_data": "at XDP the whole frame is already in ctx->data .. ctx->data_end: read it "
    "through checked pointers, or copy with bpf_xdp_load_bytes()",
    "bpf_skb_load_bytes": "use bpf_xdp_load_bytes(ctx, offset, buffer, length)",
    "bpf_skb_store_bytes": "write through a checked packet pointer, or bpf_xdp_store_bytes()",
    "bpf_l3_csum_replace": "use csum_replace16() from checksum.h, on the checksum field itself",
    "bpf_l4_csum_replace": "use csum_replace16() from checksum.h, on the checksum field itself",
    "bpf_skb_change_tail": "use bpf_xdp_adjust_tail(ctx, delta)",
    "bpf_skb_change_head": "use bpf_xdp_adjust_head(ctx, delta)",
    "bpf_skb_adjust_room": "use bpf_xdp_adjust_head() or bpf_xdp_adjust_tail()",
    "bpf_clone_redirect": "use bpf_redirect(ifindex, 0), which sends the frame itself (XDP has no clones)",
    "bpf_skb_vlan_push": "write the VLAN header yourself after bpf_xdp_adjust_head()",
    "bpf_tcp_sock": "XDP runs before the socket layer; bpf_skc_lookup_tcp() finds the socket",
}
XDP_ONLY = {
    "bpf_xdp_adjust_head": "use bpf_skb_change_head() or bpf_skb_adjust_room()",
    "bpf_xdp_adjust_tail": "use bpf_skb_change_tail()",
    "bpf_xdp_load_bytes": "use bpf_skb_load_bytes(skb, offset, buffer, length)",
    "bpf_xdp_store_bytes": "use bpf_skb_store_bytes(skb, offset, from, length, flags)",
    "bpf_xdp_adjust_meta": "use the skb's cb[] or mark fields",
}


def helper_hint(found: re.Match[str], hook: str) -> str:
    name = found["helper"]
    other = TC_ONLY if hook == "xdp" else XDP_ONLY
    if name in other:
        return f"{name}() is a helper of {'TC' if hook == 'xdp' else 'XDP'} programs only: {other[name]}"
    return (f"{name}() is not allowed in this kind of program: see `man bpf-helpers` for the hooks "
            "that offer it")


def packet_hint(found: re.Match[str], hook: str) -> str:
    if found["id"]:  # an offset the verifier cannot bound: the check alone is not enough
        return ("this pointer is the packet start plus a variable offset: a `data_end` check counts only "
                "if the offset has a bound the verifier knows, so first `if (offset > LIMIT) return "
                f"{'XDP_PASS' if hook == 'xdp' else 'TC_ACT_OK'};` with a named LIMIT (say 1500), then check "
                "`pointer + size <= data_end` right before the read")
    return "check `pointer + size <= data_end` right before this read or write (parsing.h's helpers do it)"


def scalar_hint(found: re.Match[str], hook: str) -> str:
    after = ("after a helper that may change the packet (bpf_skb_store_bytes, bpf_l3/l4_csum_replace, "
             "bpf_skb_pull_data) every packet pointer is such a number: read what you need before the "
             "helper, or parse again" if hook == "tc" else
             "after bpf_xdp_adjust_head/tail every packet pointer is such a number: parse again")
    return ("this pointer is a plain number to the verifier: derive it from ctx->data or a map value "
            f"and check it first; {after}")


def fixed(text: str) -> Hint:
    return lambda found, hook: text


def whole_message(hook: str) -> str:
    """The course's helper that sums a whole message at this hook (checksum.h)."""
    either = "csum_add_xdp() (XDP) or csum_add_skb() (TC)"
    return {"xdp": "csum_add_xdp()", "tc": "csum_add_skb()"}.get(hook, either)


def loop_hint(found: re.Match[str], hook: str) -> str:
    return ("give the loop a constant bound (a named limit such as MAX_CSUM_WORDS in checksum.h), not a "
            "length read from the packet, and `break` when the real length is reached (keep the counter "
            "in a register with barrier_var(i), as csum_add_bytes() does); to sum a whole message use "
            f"{whole_message(hook)} from checksum.h")


def too_large_hint(found: re.Match[str], hook: str) -> str:
    return ("the verifier walks every path, and gives up after a million instructions (BCC's 'at most "
            "4096 insns' is about old kernels): each branch whose outcome is used later doubles the "
            "paths after it, and each loop bound multiplies them. Lower the bounds, decide early and "
            f"return, and sum long messages with {whole_message(hook)} from checksum.h")


def context_hint(found: re.Match[str], hook: str) -> str:
    if hook == "tc":
        return ("this field of struct __sk_buff cannot be used this way here: read the fields as their "
                "declared size, write only those TC may change (mark, priority, tc_index, cb[]), and reach "
                "the packet only through data and data_end")
    return ("this field of the context cannot be used this way here: at XDP read ctx->data, "
            "ctx->data_end, ctx->ingress_ifindex or ctx->rx_queue_index, as 32-bit fields, and reach the "
            "packet only through data and data_end")


@dataclass(frozen=True)
class Rule:
    """One class of verifier or compiler message, and what a student should change."""

    name: str
    pattern: re.Pattern[str]
    hint: Hint


def rule(name: str, pattern: str, hint: str | Hint) -> Rule:
    return Rule(name, re.compile(pattern), fixed(hint) if isinstance(hint, str) else hint)


# First match wins: the more particular messages come first.
RULES = [
    rule("variable-packet-offset", r"invalid access to packet.*R(?P<reg>\d+)\(id=(?P<id>[1-9]\d*)",
         packet_hint),
    rule("packet-bounds", r"invalid access to packet|outside of the packet(?P<id>)", packet_hint),
    rule("unbounded-offset", r"math between pkt pointer and register with unbounded min value|"
         r"unbounded memory access|min value is negative|pointer be out of bounds",
         "this offset or length can be negative or huge as far as the verifier knows: make it "
         "unsigned and bound it first (`if (offset > LIMIT) return ...;` with a named LIMIT)"),
    rule("null-check", r"_or_null|Possibly NULL pointer passed",
         "a map lookup can return NULL: check the pointer (`if (!value) return ...;`) before using it"),
    rule("scalar-pointer", r"invalid mem access 'scalar'|invalid mem access 'inv'", scalar_hint),
    rule("uninitialised-stack", r"invalid (indirect )?read from stack|uninitialized stack",
         "a variable is read before it was written (a map key, a struct's padding): initialise it, "
         "`__u32 key = 0;`, or `__builtin_memset(&key, 0, sizeof(key))` for a struct"),
    rule("combined-stack", r"combined stack size",
         f"the stack of this function and the functions it calls adds up to more than {STACK_LIMIT} "
         "bytes: make the helpers `static __always_inline`, or keep large buffers in a per-CPU array map"),
    rule("stack-limit", r"stack limit|stack size of \d+|invalid (write|read) to stack .*off=-\d{3,}",
         f"the BPF stack is {STACK_LIMIT} bytes for the whole program: keep large buffers in a per-CPU "
         "array map (BPF_PERCPU_ARRAY with one entry), not in local variables"),
    rule("too-large", r"(?i)program\s+(is\s+)?too large|too many instructions", too_large_hint),
    rule("loop-too-complex", r"jumps is too complex|too complex", loop_hint),
    rule("back-edge", r"back-edge", loop_hint),
    rule("infinite-loop", r"infinite loop detected",
         "this loop can run forever as far as the verifier sees: make its counter move on every "
         "turn and its condition compare with a constant bound"),
    rule("pointer-arithmetic", r"on pointer prohibited|pointer arithmetic .*prohibited|"
         r"pointer comparison prohibited",
         "clang turned a bounds check into arithmetic on pointers: keep the loop counter a plain "
         "number hidden from the optimiser with barrier_var(i) (parsing.h), and compare pointers "
         "only with data_end"),
    rule("context-access", r"invalid bpf_context access", context_hint),
    rule("no-return", r"R0 !read_ok",
         "the entry function must return a verdict on every path: add the missing `return`"),
    rule("unset-register", r"R\d+ !read_ok",
         "a value is read that was never set here (or that a helper call overwrote): initialise it "
         "first, and read a helper's arguments again after the call"),
    rule("unreachable", r"unreachable insn",
         "some code can never run: remove it or fix the condition before it"),
    rule("unreleased-reference", r"Unreleased reference",
         "a socket from bpf_sk_lookup_tcp/udp() or bpf_skc_lookup_tcp() must be given back with "
         "bpf_sk_release() on every path, the early returns too"),
    rule("dynptr", r"dynptr|expected an initialized",
         "a dynptr must be set up (bpf_dynptr_from_xdp/skb) before it is used, and used only as "
         "the helpers that take it say"),
    rule("map-value-bounds", r"invalid access to map value|value is outside of the allowed memory range",
         "this index or offset may be past the end of the map value: check it against the value's "
         "size (`if (i >= SIZE) return ...;`) right before the access"),
    rule("pointer-return", r"leaks addr as return value|At program exit the register R0",
         "the entry function must return a verdict (XDP_PASS, TC_ACT_OK, ...), never a pointer"),
    # "cannot use helper" since Linux 5.x, "unknown func" before
    rule("helper-at-hook", r"(?:cannot use helper|unknown func) (?P<helper>\w+)", helper_hint),
]


def matching_rule(text: str, skip: str = "") -> tuple[Rule, re.Match[str]] | None:
    for candidate in RULES:
        found = candidate.pattern.search(text) if candidate.name != skip else None
        if found:
            return candidate, found
    return None


ANNOTATION = re.compile(r"^; (?P<code>.*?)\s*@ (?P<file>\S+):(?P<line>\d+)$")
INSN_INDEX = re.compile(r"^(\d+): \(")


def verifier_feedback(log: str, hook: str, smap: SourceMap, entry: str) -> str:
    """The verifier's complaint, the student's line it was checking, and what to change.

    The log lists instructions (`12: (71) r2 = ...`) with source notes between them; the
    complaint is the text after the last instruction. The line is the nearest note before it
    that names a real line (BCC notes some instructions with `main.c:0`); a helper refused by
    the hook has no note at all, and is found by its name in the program.
    """
    lines = [line for line in log.splitlines() if line.strip()]
    last_insn = max((i for i, line in enumerate(lines) if INSN_INDEX.match(line)), default=-1)
    complaint = [line for line in lines[last_insn + 1 :]
                 if not line.startswith(("processed ", "bpf: Failed", "HINT:", "-- ", "verification time",
                                         "cur state:", "old state:"))]
    text = " ".join(complaint)
    found = matching_rule(text)
    if found and found[0].name == "variable-packet-offset" and not offset_unbounded(lines, found[1]):
        found = matching_rule(text, skip="variable-packet-offset")  # bounded: the check is missing
    decisive = complaint[:3]
    named = re.search(r"\binsn (\d+)\b", text)  # "infinite loop detected at insn 3"
    upto = last_insn + 1
    if named:
        upto = max((i + 1 for i, line in enumerate(lines) if line.startswith(f"{named[1]}: (")), default=upto)
    decisive.append(f"at {where_in_log(lines[:upto], smap, found, entry)}")
    if found:
        decisive.append(f"hint: {found[0].hint(found[1], hook)}")
    return "\n".join(decisive)


# Messages best placed on the call that caused them: the verifier notes no line for these.
CALLED = {"helper-at-hook": [], "unreleased-reference": ["bpf_sk_lookup_tcp", "bpf_sk_lookup_udp",
                                                          "bpf_skc_lookup_tcp"]}


def offset_unbounded(lines: list[str], found: re.Match[str]) -> bool:
    """Whether the verifier let the refused packet pointer's variable offset reach 64 KiB.

    Such a pointer's `data_end` check is ignored (the verifier's MAX_PACKET_OFF); one with a
    smaller bound (say ip->ihl * 4) was simply not checked.
    """
    state = re.compile(rf"R{found['reg']}(?:_w)?=pkt\(id={found['id']},(?P<fields>[^)]*)")
    fields = [m["fields"] for line in lines if (m := state.search(line))]
    if not fields:
        return False
    umax = re.search(r"umax(?:_value)?=(?:\w+=)*(0x[0-9a-f]+|\d+)", fields[-1])
    fixed = re.search(r"(?:^|,)off=(-?\d+)", fields[-1])
    # The verifier counts a check only while the fixed and the variable offset together stay
    # within MAX_PACKET_OFF.
    return bool(umax) and int(umax[1], 0) + (int(fixed[1]) if fixed else 0) >= MAX_PACKET_OFF


MAX_PACKET_OFF = 0xFFFF


def where_in_log(lines: list[str], smap: SourceMap, found: tuple[Rule, re.Match[str]] | None,
                 entry: str) -> str:
    if found and found[0].name in CALLED:
        names = CALLED[found[0].name] or [found[1]["helper"]]
        calls = (n for n, text in enumerate(smap.lines, 1) if any(f"{name}(" in text for name in names))
        return smap.where(next(calls, None))
    failing = next((int(insn[1]) for line in reversed(lines) if (insn := INSN_INDEX.match(line))), None)
    insn_lines = smap.insn_lines(entry)
    if insn_lines.get(failing):  # BCC's disassembly has the failing instruction's own line
        return smap.where(smap.line(insn_lines[failing]))
    for line in reversed(lines):  # else the nearest note of the verifier's that names a real line
        note = ANNOTATION.match(line)
        if note is None or int(note["line"]) == 0 or not note["code"]:
            continue
        if note["file"] != "main.c":  # in a course header
            return header_line(note["file"], int(note["line"]), note["code"])
        return smap.where(smap.line(int(note["line"]), note["code"]))
    return smap.where(smap.definition(entry))  # no line at all: the function, at least


def header_line(name: str, line: int, code: str) -> str:
    """`checksum.h:N: code` for a note inside one of the course's headers."""
    header = BPF_INCLUDE / Path(name).name
    if header.is_file():
        text = header.read_text().splitlines()
        number = next((n for n, t in enumerate(text, 1) if code in t), line)
        return f"{header.name}:{number}: {code} (in a course header: the call in your program is the cause)"
    return f"{name}:{line}: {code}"


# --- The compiler's messages ------------------------------------------------------------------

DIAGNOSTIC = re.compile(r"^(?:error: )?(?P<file>[^:\s]+):(?P<line>\d+):\d+: (?P<kind>error|warning|note|"
                        r"fatal error|in function \S+[^:]*): ?(?P<message>.*)$")


def compile_feedback(log: str, smap: SourceMap, hook: str = "") -> str:
    """The first compiler error, on the student's line, with a hint where one applies.

    Clang quotes the line an error is on; BCC's LLVM back end reports its refusals (the stack
    limit, calls it cannot make) with the rewritten program's line only. An error inside a
    header is shown by the header's name, with where the program included it.
    """
    lines = log.splitlines()
    first = next((i for i, line in enumerate(lines) if "error:" in line or "error: " in line), None)
    if first is None:
        return "\n".join(line for line in lines[-5:] if "/" not in line)
    found = DIAGNOSTIC.match(lines[first])
    shown: list[str]
    if found is None:
        shown = [lines[first].replace(MAIN_FILE, smap.source.name)]
    elif found["file"] == MAIN_FILE:
        line = smap.diagnostic_line(int(found["line"]), first)  # LLVM may say line 0: no line then
        shown = [*([smap.where(line)] if line else []), f"error: {found['message']}"]
    else:
        included = [line for line in lines[:first] if line.startswith(f"In file included from {MAIN_FILE}:")]
        where = ""
        if included:
            number = int(included[-1].rstrip(":").rsplit(":", 1)[1])
            where = f"\n(in a header that {smap.where(smap.diagnostic_line(number, first))} includes)"
        shown = [f"{Path(found['file']).name}:{found['line']}: error: {found['message']}{where}"]
    hinted = matching_rule(lines[first]) or matching_rule(" ".join(lines[first:first + 3]))
    if hinted and hinted[0].name == "stack-limit":  # LLVM names the function's line: the locals matter
        function = re.search(r"in function (\w+)", lines[first])
        shown = [shown[-1] + (f" (in {function[1]}())" if function else ""),
                 *largest_locals(smap, function[1] if function else "")]
    elif found and "memcpy" in found["message"]:
        shown.append("hint: copy with __builtin_memcpy(to, from, SIZE) and a constant SIZE")
    elif found and re.search(r"too many arg|pass by value|aggregate|VarArgs", found["message"]):
        shown.append("hint: a BPF function takes at most 5 arguments and no struct by value: pass a "
                     "pointer, or make the helper `static __always_inline`")
    if hinted:
        shown.append(f"hint: {hinted[0].hint(hinted[1], hook)}")
    return "\n".join(shown)


C_SIZES = {"char": 1, "__u8": 1, "__s8": 1, "__u16": 2, "__s16": 2, "__be16": 2, "short": 2, "int": 4,
           "__u32": 4, "__s32": 4, "__be32": 4, "long": 8, "__u64": 8, "__s64": 8}
ARRAY = re.compile(r"^\s*(?:volatile\s+|const\s+|unsigned\s+)*(?P<type>\w+)\s+(?P<name>\w+)\s*"
                   r"\[(?P<count>\d+)\]")


STRUCT_LOCAL = re.compile(r"^\s+struct\s+\w+\s+\w+\s*(=|;|\[)")


def largest_locals(smap: SourceMap, function: str = "") -> list[str]:
    """The local arrays and structs that fill the stack, largest arrays first: what to move
    into a map. Only `function`'s own lines are searched when the compiler named it."""
    found = []
    for number in smap.function_lines(function) if function else range(1, len(smap.lines) + 1):
        text = smap.lines[number - 1]
        array = ARRAY.match(text)
        if array and text.startswith((" ", "\t")):  # indented: a local, not a global
            size = int(array["count"]) * C_SIZES.get(array["type"], 1)
            found.append((size, f"{smap.where(number)}    <- {size} bytes on the stack"))
        elif STRUCT_LOCAL.match(text):
            found.append((0, f"{smap.where(number)}    <- a whole struct on the stack: how big is it?"))
    return [line for _, line in sorted(found, key=lambda item: -item[0])[:3]]


def compiler_warnings(log: str, smap: SourceMap) -> list[str]:
    """Clang's warnings that predict wrong behaviour (an uninitialised variable), on the student's lines."""
    shown = []
    for index, line in enumerate(log.splitlines()):
        found = DIAGNOSTIC.match(line)
        if found and found["kind"] == "warning" and found["file"] == MAIN_FILE and (
                "uninitialized" in found["message"]):
            message = re.sub(r"\s*\[-W[\w-]+\]$", "", found["message"])
            line = smap.diagnostic_line(int(found["line"]), index)
            shown.append(f"warning: {message}\nat {smap.where(line)}")
    return shown


# --- What the kernel lets root get away with ----------------------------------------------------

DISASSEMBLY = re.compile(r"^\s*(?P<index>\d+):\t(?P<bytes>[0-9a-f]{2}(?: [0-9a-f]{2}){7})")
SOURCE_NOTE = re.compile(r"^; .*// Line\s+(?P<line>\d+)$")
MAP_HELPERS = {1: "bpf_map_lookup_elem", 2: "bpf_map_update_elem", 3: "bpf_map_delete_elem"}
FRAME_POINTER = 10
LD, LDX, ST, STX, ALU, ALU64 = 0, 1, 2, 3, 4, 7  # instruction classes
JMP, JMP32 = 5, 6
JA32, ATOMIC_MODE = 0x06, 0xC0
CALL, EXIT, JA, ADD64_IMM = 0x85, 0x95, 0x05, 0x07
MOV64_REG, MOV64_IMM, MOV32_REG, MOV32_IMM = 0xBF, 0xB7, 0xBC, 0xB4


def disassembly(compile_log: str, function: str) -> dict[int, tuple[bytes, int]]:
    """BCC's annotated disassembly (DEBUG_SOURCE) of `function`: index -> (8 bytes, BCC's line)."""
    insns: dict[int, tuple[bytes, int]] = {}
    line, inside = 0, False
    for text in compile_log.splitlines():
        if text.startswith("Disassembly of function "):
            inside, line = text.split()[-1] == function, 0
        elif not inside:
            continue
        elif note := SOURCE_NOTE.match(text):
            line = int(note["line"])
        elif insn := DISASSEMBLY.match(text):
            insns[int(insn["index"])] = (bytes.fromhex(insn["bytes"].replace(" ", "")), line)
    return insns


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


def stray_verdicts(compile_log: str, smap: SourceMap, hook: str, entry: str) -> list[str]:
    """Constants the entry function returns that are no verdict of its hook (`return 7;`).

    The kernel loads such a program, and drops what it returns them for (XDP), or lets the
    next filter decide (TC): a mistake only the behaviour would show, late.
    """
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
