"""Where a message points: BCC compiles a rewritten copy of the program (`/virtual/main.c`, with
its own prelude, `map.lookup()` turned into helper calls), so its line numbers are not the
student's. `SourceMap` lines the copy up with the student's file."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

MAIN_FILE = "/virtual/main.c"  # what BCC calls the program file in its messages
PRELUDE = "#if defined(BPF_LICENSE)"  # the first line of BCC's rewritten program
FOOTER = "#include <bcc/footer.h>"  # and its last
DISASSEMBLY = re.compile(r"^\s*(?P<index>\d+):\t(?P<bytes>[0-9a-f]{2}(?: [0-9a-f]{2}){7})")
SOURCE_NOTE = re.compile(r"^; .*// Line\s+(?P<line>\d+)$")


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
