"""Compile and load BCC programs, attach them at XDP and TC, and explain failures in plain words.

BCC prints the compiler's and the verifier's messages on the process's stderr rather than
putting them in its exceptions, so compile and load run with file descriptor 2 captured.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bpflab import libbpf
from bpflab.course.labs import BPF_INCLUDE
from bpflab.explain import (
    WARNINGS_SHOWN,
    SourceMap,
    compile_feedback,
    compiler_warnings,
    stray_verdicts,
    uninitialised_keys,
    verifier_feedback,
)
from bpflab.verdicts import TC_VERDICTS as TC_VERDICTS  # re-exported: notebooks name verdicts here
from bpflab.verdicts import XDP_VERDICTS as XDP_VERDICTS

# Program types (include/uapi/linux/bpf.h).
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6

# BCC's debug flags: print the rewritten program and the annotated disassembly while compiling,
# so that messages can be put on the student's own lines (bpflab.explain).
DEBUG_PREPROCESSOR, DEBUG_SOURCE = 0x4, 0x8
TRIAL_TIMEOUT = 120  # seconds: a compile that takes longer is a program that explodes in clang

# Compiled in a fresh interpreter first: LLVM ends the whole process (exit status 1) on some
# refusals, the 512-byte stack limit among them, and a notebook kernel or a graded run must
# survive that. Exit status 3 is a compile error that BCC reports normally.
TRIAL = """
import sys
from bcc import BPF
try:
    BPF(src_file=sys.argv[1].encode(), cflags=sys.argv[3:], debug=int(sys.argv[2]))
except Exception:
    sys.exit(3)
"""
SURVIVED = Path("/var/cache/bpflab/compiled")  # one empty file per version that compiled in a trial


class ProgramError(Exception):
    """A program that did not compile, load or attach, with what a student needs to fix it."""

    def __init__(self, stage: str, summary: str, decisive: str = "", log: str = "") -> None:
        self.stage = stage  # "compile", "load" (its maps), "verify" or "attach"
        self.summary = summary  # one sentence in plain words
        self.decisive = decisive  # the lines of the log that matter
        self.log = log  # everything the compiler or verifier printed
        super().__init__(self.explain())

    def explain(self) -> str:
        """Plain-words feedback: the summary, then the lines that matter."""
        return f"{self.summary}\n{self.decisive}".rstrip()

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for this error in a notebook: the explanation, not our traceback."""
        return [f"ProgramError: {self.explain()}"]


class CompilerWarning(UserWarning):
    """A program that loads but will misbehave: clang or the course's own checks say where."""


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A CompilerWarning shows its own text alone (the student's line and what to change), not
    the Python file and line that loaded the program; other warnings as Python shows them."""
    if issubclass(category, CompilerWarning):
        return f"{message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning, warnings.formatwarning = warnings.formatwarning, _format_warning


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what C code (libclang, libbpf) writes on fd 2, and on fd 1 too (BCC prints some of
    its debug output there): the text lands in the list, and nothing reaches a notebook's cell."""
    sink: list[str] = []
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    libc.fflush(None)  # what C code buffered before: not ours to capture
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield sink
        finally:
            libc.fflush(None)  # BCC's std::cout lines, buffered by libc: into the capture, now
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            sink.append(tmp.read().decode(errors="replace"))


def survives_compile(source: Path, flags: list[str], hook: str = "") -> None:
    """Compile `source` in a child interpreter; raise ProgramError if the compiler ended it.

    A version that survived once is not tried again: the trial costs a second compile (about
    2 s), paid once per version of a program, on this machine's toolchain. The record is a file
    named by a hash of everything the compile reads (see `compile_key`), so a graded run, the
    notebook and the next check share it.
    """
    record = SURVIVED / compile_key(source, flags)
    if record.exists():
        return
    debug = str(DEBUG_PREPROCESSOR)
    try:
        trial = subprocess.run([sys.executable, "-c", TRIAL, str(source), debug, *flags],
                               capture_output=True, text=True, timeout=TRIAL_TIMEOUT, errors="replace")
    except subprocess.TimeoutExpired as exc:
        raise ProgramError("compile", f"{source.name} did not compile in {TRIAL_TIMEOUT} s: the "
                           "compiler gave up on it (a loop or macro that expands without end?).") from exc
    if trial.returncode not in (0, 3):
        log = trial.stderr
        raise ProgramError("compile", f"{source.name} does not compile: the compiler stopped "
                           f"(exit status {trial.returncode}).",
                           compile_feedback(log, SourceMap(source, log), hook), log)
    with contextlib.suppress(OSError):  # a machine where the cache cannot be written tries again
        SURVIVED.mkdir(parents=True, exist_ok=True)
        record.touch()


def compile_key(source: Path, flags: list[str]) -> str:
    """A hash of what a compile reads: the program, the course's headers, the flags, and the
    toolchain (BCC's library, the kernel whose headers BCC compiles against)."""
    import bcc  # noqa: F401 - loads BCC's library, whose files go into the key

    digest = hashlib.sha256(source.read_bytes() + "\0".join(flags).encode() + os.uname().release.encode())
    for header in sorted(BPF_INCLUDE.glob("*.h")):
        digest.update(header.read_bytes())
    mapped = Path("/proc/self/maps").read_text().split()
    toolchain = {path for path in mapped if any(name in path for name in ("libbcc", "libLLVM", "libclang"))}
    for library in sorted(toolchain):
        info = Path(library).stat()  # the libraries this process loaded: a new BCC or LLVM is a new key
        digest.update(f"{library}:{info.st_size}:{info.st_mtime_ns}".encode())
    return digest.hexdigest()


@dataclass
class Program:
    """A compiled BCC module with one loaded entry function."""

    bpf: object  # bcc.BPF; typed loosely so that importing this module does not need BCC
    name: str
    hook: str
    fd: int
    source: Path
    attachments: list[Callable[[], None]] = field(default_factory=list)  # what detaches it, each
    warnings: list[str] = field(default_factory=list)  # what will misbehave, and where
    owns_module: bool = True  # False when it shares its compiled module with other programs

    def loaded(self) -> str:
        """What a notebook says once the program is in: loaded, and whether warnings above it say
        that it will still misbehave (a loaded program is not yet a right one)."""
        said = f"{self.name}() passed the verifier and is loaded at {self.hook} as program fd {self.fd}"
        if not self.warnings:
            return said
        many = len(self.warnings) > 1
        count = f"the {len(self.warnings)} warning{'s' if many else ''} above say{'' if many else 's'}"
        return f"{said}; but {count} what it will get wrong"

    def table(self, name: str):
        """A map of the program, by the name it has in the C source."""
        return self.bpf[name.encode()]

    @property
    def instructions(self) -> int:
        """The program's length in BPF instructions, as the kernel runs it (after BCC's rewrites)."""
        return libbpf.prog_info(self.fd)[0]

    @property
    def verified_instructions(self) -> int:
        """Instructions the verifier processed: every path it walked, so loops and branches count
        more than once. The kernel refuses a program past one million."""
        return libbpf.prog_info(self.fd)[1]

    def percpu_sums(self, name: str) -> dict[int, int]:
        """A per-CPU array's values, summed over CPUs, for the keys that are non-zero."""
        table = self.table(name)
        return {k.value: sum(v) for k, v in table.items() if sum(v)}

    def close(self) -> None:
        """Detach from every interface it was attached to, then free it."""
        for detach in reversed(self.attachments):
            with contextlib.suppress(FileNotFoundError, ProgramError):  # its netns or interface is gone
                detach()
        self.attachments.clear()
        if self.owns_module:
            self.bpf.cleanup()


@dataclass
class Compiled:
    """A compiled BCC module (maps created), whose entry functions are loaded one by one."""

    bpf: object  # bcc.BPF
    source: Path
    hook: str
    log: str  # what BCC printed while compiling: its rewritten program, disassembly, warnings
    smap: SourceMap

    def load(self, entry: str, owns_module: bool = True, hook: str = "") -> Program:
        """Verify and load `entry` (at `hook`, if not the module's: a file of several programs,
        each at its own hook, shares its maps); ProgramError says why the verifier refused it.

        A program that loads but will misbehave (an uninitialised variable or map key, a
        return value that is no verdict) loads with a CompilerWarning per problem, also kept
        in `program.warnings`.
        """
        from bcc import BPF

        hook = hook or self.hook
        found = [*compiler_warnings(self.log, self.smap), *uninitialised_keys(self.log, self.smap, entry),
                 *stray_verdicts(self.log, self.smap, hook, entry)]
        prog_type = {"xdp": BPF.XDP, "tc": BPF.SCHED_CLS, "sock_ops": BPF.SOCK_OPS}[hook]
        with captured_stderr() as verifier:
            try:
                fn = self.bpf.load_func(entry.encode(), prog_type)
            except Exception as exc:
                error = str(exc)
            else:
                error = ""
        name = self.source.name
        if error and ("Unknown program" in error or "not found" in error):
            raise ProgramError("verify", f"{name} has no function called {entry}().")
        if error:
            feedback = verifier_feedback(verifier[0], hook, self.smap, entry)
            if "hint:" not in feedback:  # no verifier log (no memory, no permission): BCC's own words
                feedback = "\n".join([*(line for line in verifier[0].splitlines() if line.startswith("bpf:")),
                                      feedback, error]).strip()
            raise ProgramError("verify", f"The kernel's verifier rejected {entry}() in {name}.",
                               feedback, verifier[0])
        for text in found:
            warnings.warn(text, CompilerWarning, stacklevel=3)
        return Program(bpf=self.bpf, name=entry, hook=hook, fd=fn.fd, source=self.source,
                       warnings=found, owns_module=owns_module)


def compile_source(source: Path, hook: str, cflags: tuple[str, ...] = ()) -> Compiled:
    """Compile `source` with BCC for `hook`; ProgramError has the compiler's decisive lines."""
    from bcc import BPF  # Debian's python3-bpfcc; imported late so the CLI starts without it

    source = Path(source)
    flags = [f"-I{BPF_INCLUDE}", *WARNINGS_SHOWN, *cflags]
    survives_compile(source, flags, hook)
    with captured_stderr() as log:
        try:
            bpf = BPF(src_file=str(source).encode(), cflags=flags, debug=DEBUG_PREPROCESSOR | DEBUG_SOURCE)
        except Exception:  # BCC raises a bare Exception for any failed compile: its log says why
            bpf = None
    smap = SourceMap(source, log[0])
    if bpf is None and "Cannot allocate memory" in log[0]:
        raise ProgramError(
            "load",
            f"The kernel refused to create the maps of {source.name}: they need more memory than a "
            "graded program may use. Declare smaller maps.",
            next(line for line in log[0].splitlines() if "Cannot allocate memory" in line),
            log[0],
        )
    if bpf is None:
        raise ProgramError("compile", f"{source.name} does not compile.",
                           compile_feedback(log[0], smap, hook), log[0])
    return Compiled(bpf, source, hook, log[0], smap)


def load(source: Path, entry: str, hook: str, cflags: tuple[str, ...] = ()) -> Program:
    """Compile `source` with BCC and load `entry` at `hook` ("xdp", "tc" or "sock_ops").

    Raises ProgramError with the decisive compiler or verifier lines on failure; warns
    (CompilerWarning) about what will misbehave though it loads.
    """
    compiled = compile_source(source, hook, cflags)
    try:
        return compiled.load(entry)
    except BaseException:  # refused, or anything else: the maps must not outlive the call
        compiled.bpf.cleanup()
        raise


def load_text(text: str, entry: str, hook: str, filename: str = "program.c") -> Program:
    """Compile and load a program given as source text (a notebook's experiment, a check).

    Errors quote the code as `filename`, as if it had been written to a file of that name.
    """
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / filename
        source.write_text(text)
        return load(source, entry, hook)


def verifier_says(text: str, entry: str, hook: str, filename: str = "program.c") -> str:
    """In words, what loading `text` gives: for notebooks that show the verifier at work."""
    try:
        load_text(text, entry, hook, filename).close()
    except ProgramError as err:
        return f"rejected at the {err.stage} stage:\n{err.explain()}"
    return "accepted by the verifier"


def load_raw(prog_type: int, verdict: int, name: str) -> int:
    """Load a two-instruction program that only returns `verdict`; return its fd.

    Used for the peer's XDP_PASS program and as the empty program that measures the test-run
    harness's floor. No compiler is involved, so it is fast and cannot fail to build.
    """
    insns = (ctypes.c_uint8 * 16)(
        *[0xB7, 0, 0, 0, *(verdict & 0xFFFFFFFF).to_bytes(4, "little")],  # r0 = verdict
        *[0x95, 0, 0, 0, 0, 0, 0, 0],  # exit
    )
    prog_load = libbpf.lib().bpf_prog_load
    prog_load.argtypes = [
        ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t,
        ctypes.c_void_p,
    ]
    fd = prog_load(prog_type, name.encode(), b"GPL", insns, 2, None)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"cannot load the {name} program")
    return fd
