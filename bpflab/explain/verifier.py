"""The verifier's refusals: the line of the student's file that matters, and what to change.

`RULES` maps each common message to a hint, aware of the hook (a helper suggested at XDP must
exist at XDP), naming the course's own helper where there is one. The verifier's nearest
`; code @ main.c:N` note may say line 0: walk back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bpflab.course.labs import BPF_INCLUDE
from bpflab.explain.sourcemap import SourceMap

STACK_LIMIT = 512  # bytes of BPF stack per program, subprograms included

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
SOCK_OPS_HAS = {  # at sock_ops the socket is the context itself
    "bpf_skc_lookup_tcp": "at sock_ops the socket is the context: read skops->state, skops->remote_ip4 ...",
    "bpf_sk_lookup_tcp": "at sock_ops the socket is the context: read skops->state, skops->remote_ip4 ...",
    "bpf_tcp_sock": "at sock_ops the connection's figures are fields of the context: skops->snd_cwnd, "
    "skops->srtt_us, skops->total_retrans",
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
    if hook == "sock_ops" and name in SOCK_OPS_HAS:
        return f"{name}() is not offered to sock_ops programs: {SOCK_OPS_HAS[name]}"
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
            "in a register with barrier_var(i) from parsing.h); to sum a whole message use "
            f"{whole_message(hook)} from checksum.h")


def too_large_hint(found: re.Match[str], hook: str) -> str:
    return ("the verifier walks every path, and gives up after a million instructions (BCC's 'at most "
            "4096 insns' is about old kernels): each branch whose outcome is used later doubles the "
            "paths after it, and each loop bound multiplies them. Lower the bounds, decide early and "
            f"return, and sum long messages with {whole_message(hook)} from checksum.h")


def context_hint(found: re.Match[str], hook: str) -> str:
    if re.search(r"invalid bpf_context access off=\d+ size=8", found.string):
        return ("the compiler merged two neighbouring 32-bit reads of the context into one 64-bit read "
                "(newer clang does), which the verifier refuses: read each field into a variable of its own "
                "and hide it from the optimiser with barrier_var(variable) (parsing.h) before using it")
    if hook == "sock_ops":
        return ("read each field of struct bpf_sock_ops straight from skops into a variable of its own "
                "(`__u32 port = skops->local_port;`): the verifier rewrites every such read, and refuses one "
                "through a pointer that was moved or picked by `?:`; write only the fields sock_ops may "
                "change (reply, sk_txhash)")
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
    rule("context-access", r"invalid bpf_context access|dereference of modified ctx ptr", context_hint),
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


