"""A hostile class: submissions that try what students' code may try, and what each must get.

Used by tests/test_batch.py and bench/grade_class.py. Each case is made from the hello-xdp
reference (so that only its trick differs) and names the score it must get and words its
feedback must contain.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bpflab.course.labs import load_lab
from bpflab.course.starters import starter_source
from grader.sandbox import MAX_BYTES

LAB = load_lab("hello-xdp")
REFERENCE = LAB.reference.read_text()
COMPILE_LIMIT = 30  # seconds; hello-xdp compiles and loads in 4 s, 8 s with two graders at once,
# more with cold caches: slow-compile never finishes, so any limit catches it
# 2^40 copies of 1000 additions in one `#if`: clang evaluates them for ages, in constant memory
# (each macro expansion costs a source location; long bodies make those few).
SLOW = "\n".join(["#define X0 (" + "1+" * 1000 + "1)",
                  *(f"#define X{i} (X{i - 1}+X{i - 1})" for i in range(1, 41)), "#if X40 > 0", "#endif", ""])
ETH_CHECK = "\tif (!eth)\n\t\treturn XDP_PASS; /* shorter than an Ethernet header: not ours to judge */\n"
CANARY_ENV = "BPFLAB_HOSTILE_CANARY"


def with_text(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / LAB.program).write_text(text)


def symlink_out(folder: Path) -> None:
    (folder / LAB.program).symlink_to("/etc/passwd")


def binary(folder: Path) -> None:
    (folder / LAB.program).write_bytes(REFERENCE.encode() + b"\0\x7fELF")


def hostile_conftest(folder: Path) -> None:
    """The reference with a conftest.py and pytest.ini that would cheat if they were ever loaded."""
    (folder / LAB.program).write_text(REFERENCE)
    canary = os.environ.get(CANARY_ENV, "/tmp/bpflab-hostile-canary")
    (folder / "conftest.py").write_text(
        f"open({canary!r}, 'w').write('loaded')\n"
        "import pytest\n"
        "@pytest.hookimpl(hookwrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    outcome = yield\n"
        "    outcome.get_result().outcome = 'passed'\n")
    (folder / "pytest.ini").write_text("[pytest]\naddopts = -p no:terminal --this-option-does-not-exist\n")


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], None]
    score: float  # what it must get (out of LAB.points)
    says: str  # words the feedback must contain


CASES = {
    "reference-with-cheating-conftest": Case(hostile_conftest, LAB.points, ""),
    "compile-error": Case(with_text(REFERENCE.replace("proto = ip->protocol;", "proto = ip->protocol")),
                          0, "hello_xdp.c does not compile."),
    "verifier-rejects": Case(with_text(REFERENCE.replace(ETH_CHECK, "").replace("eth = parse_ethhdr(&c);",
                                                                                "eth = c.pos;")),
                             0, "The kernel's verifier rejected hello_xdp()"),
    "include-etc-passwd": Case(with_text('#include "/etc/passwd"\n' + REFERENCE), 0,
                               'hello_xdp.c:1: `#include "/etc/passwd"`: absolute paths are not allowed.'),
    "include-grader-source": Case(with_text('#include "../../grader/checks.py"\n' + REFERENCE), 0,
                                  "hello_xdp.c:1: `#include \"../../grader/checks.py\"`: `..` is not allowed "
                                  "in an include path."),
    "incbin": Case(with_text(REFERENCE + 'asm(".incbin \\"/etc/shadow\\"");\n'), 0,
                   "inline assembly (`asm`) is not allowed."),
    "symlink-outside": Case(symlink_out, 0, "hello_xdp.c is a symbolic link; submit the file itself."),
    "binary": Case(binary, 0, "hello_xdp.c is a binary file (it holds NUL bytes); submit the text file."),
    "oversized": Case(with_text(REFERENCE + "/*" + "x" * MAX_BYTES + "*/\n"), 0,
                      "hello_xdp.c is larger than 64 KiB, the limit for a program file."),
    "empty-folder": Case(lambda folder: None, 0, "The submission folder is empty: it must hold hello_xdp.c."),
    "wrong-entry-name": Case(with_text(REFERENCE.replace("int hello_xdp(", "int hello(")), 0,
                             "hello_xdp.c has no function called hello_xdp(): keep the starter's name."),
    "huge-map": Case(with_text(REFERENCE.replace("BPF_PERCPU_ARRAY(proto_count, __u64, 256);",
                                                 "BPF_PERCPU_ARRAY(proto_count, __u64, 256);\n"
                                                 "BPF_ARRAY(huge, __u64, 1U << 31); /* 16 GiB */")),
                     0, "The kernel refused to create the maps of hello_xdp.c"),
    "slow-compile": Case(with_text(SLOW + REFERENCE), 0,
                         f"Compiling and loading hello_xdp.c took longer than {COMPILE_LIMIT} s"),
    "drops-everything": Case(with_text(REFERENCE.replace("\t/* END SOLUTION */\n\treturn XDP_PASS;",
                                                         "\t/* END SOLUTION */\n\treturn XDP_DROP;")),
                             0, "returned XDP_DROP"),
    "starter": Case(with_text(starter_source(REFERENCE)), 0, "expected {1: 1}"),
}


def make_hostile_class(root: Path, prefix: str = "") -> dict[str, Case]:
    """One student folder per case under `root`; the reference case in Gradescope's layout."""
    for name, case in CASES.items():
        folder = root / f"{prefix}{name}"
        if name.startswith("reference"):
            folder = folder / "submission"
        folder.mkdir(parents=True)
        case.make(folder)
    return {f"{prefix}{name}": case for name, case in CASES.items()}
