"""The compiler's errors and the warnings that predict bugs, placed on the student's lines."""

from __future__ import annotations

import re
from pathlib import Path

from bpflab.explain.sourcemap import MAIN_FILE, SourceMap
from bpflab.explain.verifier import matching_rule

WARNINGS_SHOWN = ("-Wuninitialized", "-Wsometimes-uninitialized")  # warnings that predict bugs
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
STACK_LIMIT = 512  # bytes of stack a BPF program may use


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
    if any(size > STACK_LIMIT for size, _ in found):  # one array is too big alone: that is the one
        found = [(size, line) for size, line in found if size > STACK_LIMIT]
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


