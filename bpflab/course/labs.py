"""Lab manifests: the single description of a lab that every part of the course reads."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # bpflab/course/labs.py -> the course folder
BPF_DIR = ROOT / "bpf"
BPF_INCLUDE = BPF_DIR / "include"
BPF_TOOLS = BPF_DIR / "tools"  # the benchmark's programs: a DNS load generator and an answer counter
LABS_DIR = ROOT / "labs"
NOTEBOOKS_DIR = ROOT / "notebooks"
GRADER_TESTS = ROOT / "grader" / "tests"
HIDDEN_TESTS = GRADER_TESTS / "hidden"  # instructor-only suites: never in the student release
ANSWER_KEYS = ROOT / "answer_keys"  # question sets' references: never in the release either
HOOKS = ("xdp", "tc")  # a lab's main hook
# Where a part of a several-program lab may run (tcp-state, xdp-cache); "tc" is TC ingress.
PART_HOOKS = (*HOOKS, "tc-egress", "sock_ops")
KINDS = ("program", "gym", "questions")  # a BPF program to write, a file of exercises, or questions


@dataclass(frozen=True)
class Lab:
    """One lab, found by its id (`hello-xdp`) from every part of the course."""

    id: str
    title: str
    program: str  # the file the student submits: hello_xdp.c, or measure_answers.toml
    points: int  # total points of the lab's graded suites, hidden tests included
    notebook: str  # notebook stem under notebooks/, e.g. 00-hello-xdp
    entry: str = ""  # a program's entry function, e.g. hello_xdp
    hook: str = ""  # a program's hook: "xdp" or "tc"
    hidden_points: int = 0  # the part of `points` graded by instructor-only tests
    kind: str = "program"  # "gym": several programs in one file; "questions": answers, no program
    parts: tuple[tuple[str, str], ...] = ()  # (entry, hook) of each program of a several-program lab

    @property
    def is_program(self) -> bool:
        """A lab whose submission is BPF C (compiled, verified, attached): a program or a gym."""
        return self.kind in ("program", "gym")

    @property
    def entries(self) -> list[str]:
        """Every entry function the reference defines: a gym's exercises, or the one entry."""
        if self.parts:
            return [entry for entry, _ in self.parts]
        if self.kind != "gym":
            return [self.entry]
        from bpflab.gym import exercises  # late: the gym module loads programs, which read labs

        return [exercise.entry for exercise in exercises(self.reference.read_text())]

    def hook_of(self, entry: str) -> str:
        """The hook an entry function runs at: its part's, or the lab's ("tc-egress" is "tc")."""
        return dict(self.parts).get(entry, self.hook).split("-")[0]

    def direction_of(self, entry: str) -> str:
        """Where a TC part is attached: "egress" if the manifest says "tc-egress", else "ingress"."""
        return "egress" if dict(self.parts).get(entry) == "tc-egress" else "ingress"

    @property
    def folder(self) -> Path:
        return LABS_DIR / self.id

    @property
    def reference(self) -> Path:
        """The reference solution, with its solution regions marked.

        A program's is in bpf/; a question set's is its answer key, in answer_keys/. The student
        release copies neither folder: its starters are made from them.
        """
        return (BPF_DIR if self.is_program else ANSWER_KEYS) / self.program

    @property
    def suite(self) -> Path:
        """The graded pytest suite, named after the program like the kernel's selftests."""
        return GRADER_TESTS / f"test_{Path(self.program).stem}.py"

    @property
    def hidden_suite(self) -> Path:
        """Instructor-only tests (absent from the student release), if the lab has any."""
        return HIDDEN_TESTS / f"test_{Path(self.program).stem}_hidden.py"

    def suites(self, hidden: bool = True) -> list[Path]:
        """The suites a grade runs: the public one, and the hidden one where this copy has it."""
        return [self.suite, *([self.hidden_suite] if hidden and self.hidden_suite.is_file() else [])]

    def source(self) -> Path:
        """The program the notebook works on: the student's copy in a release, else the reference."""
        student_copy = self.folder / self.program
        return student_copy if student_copy.exists() else self.reference


def load_lab(lab_id: str) -> Lab:
    """Read `labs/<id>/lab.toml`; unknown ids raise KeyError naming the known ones."""
    manifest = LABS_DIR / lab_id / "lab.toml"
    if not manifest.is_file():
        known = ", ".join(lab.id for lab in all_labs()) or "none"
        raise KeyError(f"no lab called {lab_id!r} (known labs: {known})")
    data = tomllib.loads(manifest.read_text())
    lab = Lab(**{**data, "parts": tuple(data.get("parts", {}).items())})  # frozen: a tuple, not a dict
    if lab.id != lab_id or lab.kind not in KINDS:
        raise ValueError(f"{manifest}: id must be {lab_id!r} and kind one of {KINDS}")
    if lab.is_program and (lab.hook not in HOOKS or not lab.entry):
        raise ValueError(f"{manifest}: a program lab needs an entry and a hook, one of {HOOKS}")
    if lab.parts and (lab.kind != "program" or lab.parts[0] != (lab.entry, lab.hook)
                      or not {hook for _, hook in lab.parts} <= set(PART_HOOKS)):
        raise ValueError(f"{manifest}: parts name entries and hooks ({PART_HOOKS}), the entry's first")
    if not lab.is_program and not lab.program.endswith(".toml"):
        raise ValueError(f"{manifest}: a question set's answers are a .toml file")
    return lab


def all_labs() -> list[Lab]:
    """Every lab, in course order (by notebook number)."""
    ids = [p.parent.name for p in LABS_DIR.glob("*/lab.toml")]
    return sorted((load_lab(i) for i in ids), key=lambda lab: lab.notebook)


def program_labs() -> list[Lab]:
    """The labs whose submission is a BPF program (compiled, verified, attached)."""
    return [lab for lab in all_labs() if lab.is_program]
