"""A gym: one file of exercises, each a small program compiled and verified on its own.

An exercise runs from its `/* ===== Exercise N: name ===== */` line to the next one; what
comes before the first is shared (includes). The whole file is compiled once; if the
compiler refuses it, the exercise it names (by line, or by function for LLVM's own refusals)
is set aside with that explanation and the rest is compiled again, with the set-aside lines
blanked so that every line keeps its number. Then each exercise's entry function is verified
on its own: the verifier's refusal of one says nothing about the others.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bpflab.programs import CompilerWarning, Program, ProgramError, compile_source

MARKER = re.compile(r"^/\* =+ Exercise (?P<number>\d+): (?P<name>[\w-]+) ")
ENTRY = re.compile(r"^int\s+(?P<entry>\w+)\s*\(\s*struct\s+xdp_md\s*\*\s*\w+\s*\)", re.M)


@dataclass(frozen=True)
class Exercise:
    number: int
    name: str
    entry: str
    lines: range  # 0-based line indices of the file

    def holds(self, line: int) -> bool:
        """Whether 1-based `line` of the file is in this exercise."""
        return line - 1 in self.lines


def exercises(text: str) -> list[Exercise]:
    """The exercises of a gym file, in order; each must define one XDP entry function."""
    lines = text.splitlines()
    starts = [(i, m) for i, line in enumerate(lines) if (m := MARKER.match(line))]
    found = []
    for k, (start, marker) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        entries = ENTRY.findall("\n".join(lines[start:end]))
        if len(entries) != 1:
            raise ValueError(f"exercise {marker['name']} must define exactly one XDP entry function")
        found.append(Exercise(int(marker["number"]), marker["name"], entries[0], range(start, end)))
    return found


def without(text: str, left_out: list[Exercise]) -> str:
    """`text` with the lines of `left_out` blank: every other line keeps its number."""
    lines = text.splitlines()
    for exercise in left_out:
        for i in exercise.lines:
            lines[i] = ""
    return "\n".join(lines) + "\n"


def culprit(error: ProgramError, pending: list[Exercise]) -> Exercise | None:
    """The exercise the compiler's first error is in: the function LLVM's back end names, or the
    line clang names (the compiled copy keeps the file's line numbers). Only the first: the
    explanation is about that error, and the next round finds the next one."""
    llvm = re.search(r"^error: .*in function (\w+)", error.log, re.M)
    clang = re.search(r"^/virtual/main\.c:(\d+):\d+: (?:fatal )?error:", error.log, re.M)
    for exercise in pending:
        if (llvm and exercise.entry == llvm[1]) or (clang and exercise.holds(int(clang[1]))):
            return exercise
    return None


@dataclass
class Gym:
    """The exercises of one gym file: each loaded, or with why not."""

    source: Path
    exercises: list[Exercise]
    programs: dict[str, Program] = field(default_factory=dict)
    refused: dict[str, ProgramError] = field(default_factory=dict)
    modules: list[object] = field(default_factory=list)  # compiled BCC modules, freed by close()

    def exercise(self, name: str) -> Exercise:
        found = [e for e in self.exercises if e.name == name]
        if not found:
            raise ProgramError("compile", f"{self.source.name} has no exercise called {name}: keep the "
                               "starter's `/* ===== Exercise N: name ===== */` lines and entry functions.")
        return found[0]

    def program(self, name: str) -> Program:
        """Exercise `name`'s loaded program; raises its ProgramError if it did not load."""
        self.exercise(name)
        if name in self.refused:
            raise self.refused[name]
        return self.programs[name]

    def warnings(self, name: str) -> list[str]:
        """What the compiler and the course's checks warn about in exercise `name` only."""
        exercise = self.exercise(name)
        program = self.programs.get(name)
        lines = (re.search(rf"{re.escape(self.source.name)}:(\d+):", text) for text in program.warnings) \
            if program else ()
        return [text for text, line in zip(program.warnings if program else [], lines, strict=True)
                if line is None or exercise.holds(int(line[1]))]

    def report(self, name: str) -> str:
        """What exercise `name` gets, in words: accepted, or refused and why, and any warning."""
        exercise = self.exercise(name)
        title = f"Exercise {exercise.number} ({name}), {exercise.entry}()"
        if name in self.refused:
            return f"{title}: refused.\n{self.refused[name].explain()}"
        warned = self.warnings(name)
        if warned:
            return f"{title}: loads, but will misbehave.\n" + "\n".join(warned)
        return f"{title}: accepted by the verifier, no warning. Check it: make check LAB=verifier"

    def close(self) -> None:
        for program in self.programs.values():
            program.close()
        for module in self.modules:
            module.cleanup()
        self.programs.clear()
        self.modules.clear()


def load_gym(source: Path, hook: str = "xdp") -> Gym:
    """Compile the gym at `source` and load every exercise that can be; see the module's doc."""
    text = Path(source).read_text()
    try:
        found = exercises(text)
    except ValueError as error:
        raise ProgramError("compile", f"{Path(source).name}: {error}; keep one entry function per "
                           "exercise, as in the starter.") from error
    gym = Gym(Path(source), found)
    try:
        compile_each(gym, text, hook)
    except BaseException:
        gym.close()
        raise
    return gym


def compile_each(gym: Gym, text: str, hook: str) -> None:
    """Compile what is left of the gym until it compiles, then verify each exercise (see above)."""
    pending = list(gym.exercises)
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / gym.source.name  # messages name the student's file
        while pending:
            copy.write_text(without(text, [e for e in gym.exercises if e not in pending]))
            try:
                compiled = compile_source(copy, hook)
            except ProgramError as error:
                guilty = culprit(error, pending)
                for exercise in [guilty] if guilty else list(pending):
                    gym.refused[exercise.name] = error
                    pending.remove(exercise)
                continue
            gym.modules.append(compiled.bpf)
            for exercise in pending:
                try:
                    with warnings.catch_warnings():  # the gym reports them, each with its exercise
                        warnings.simplefilter("ignore", CompilerWarning)
                        gym.programs[exercise.name] = compiled.load(exercise.entry, owns_module=False)
                except ProgramError as error:
                    gym.refused[exercise.name] = error
            break
