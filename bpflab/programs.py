"""Compile and load BCC programs, attach them at XDP and TC, and explain failures in plain words.

BCC prints the compiler's and the verifier's messages on the process's stderr rather than
putting them in its exceptions, so compile and load run with file descriptor 2 captured.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from pyroute2 import NetNS

from bpflab import libbpf
from bpflab.labs import BPF_INCLUDE

P = ParamSpec("P")
R = TypeVar("R")

# Flags of IFLA_XDP (include/uapi/linux/if_link.h).
XDP_FLAGS_SKB_MODE = 1 << 1  # generic XDP: runs after the skb is built, works on any device
XDP_FLAGS_DRV_MODE = 1 << 2  # native XDP: runs in the driver, before any skb exists
XDP_MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}

# tc's clsact qdisc has two hooks; these are their parent handles.
TC_PARENTS = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}

# Program types and return codes from include/uapi/linux/bpf.h.
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6
XDP_VERDICTS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
TC_VERDICTS = {-1: "TC_ACT_UNSPEC", 0: "TC_ACT_OK", 2: "TC_ACT_SHOT", 7: "TC_ACT_REDIRECT"}

# What a student should try, keyed by a fragment of the verifier's message.
VERIFIER_HINTS = {
    "invalid access to packet": "check `pointer + size <= data_end` right before this read or write",
    "outside of the packet": "check `pointer + size <= data_end` right before this read or write",
    "map_value_or_null": "a map lookup can return NULL: check the pointer before using it",
    "invalid mem access 'scalar'": "this pointer is a plain number to the verifier: derive it "
    "from ctx->data or a map value and check it first; after a helper that may change the packet "
    "(bpf_skb_store_bytes, bpf_l3/l4_csum_replace, ...) every packet pointer is such a number: "
    "read what you need before the helper, or parse again",
    "back-edge": "give the loop a constant upper bound (a named limit)",
    "infinite loop": "give the loop a constant upper bound (a named limit)",
    "too large": "the program is too long for the verifier: lower the loop bounds",
    "stack": "the BPF stack is 512 bytes: keep large buffers in a map, not on the stack",
    "unreachable insn": "some code can never run: remove it or fix the condition before it",
    "R0 !read_ok": "the entry function must return a verdict on every path",
    "unknown func": "this helper is not allowed at this hook",
}


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


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture what C code (libclang, libbpf) writes on fd 2; the text lands in the list."""
    sink: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.append(tmp.read().decode(errors="replace"))


MAIN_FILE = "/virtual/main.c"  # what BCC calls the program file in its messages
DIAGNOSTIC = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):\d+: (?P<kind>error|warning|note|fatal error): ")


def compile_error_lines(log: str, source: Path) -> str:
    """The first compiler error with the source lines clang quotes under it.

    Clang quotes the line an error is on, in whatever file that is. An error inside a header
    is shown by its header's name and message only, with where the program included it:
    compiler messages never quote a file other than the program itself.
    """
    lines = log.splitlines()
    first = next((i for i, line in enumerate(lines) if ": error:" in line), None)
    if first is None:
        shown = [line.replace(MAIN_FILE, source.name) for line in lines[-5:]]
        return "\n".join(line for line in shown if "/" not in line)  # no other file's path or text
    found = DIAGNOSTIC.match(lines[first])
    if found is None or found["file"] == MAIN_FILE:
        return "\n".join(lines[first : first + 3]).replace(MAIN_FILE, source.name)
    included = [line for line in lines[:first] if line.startswith(f"In file included from {MAIN_FILE}:")]
    message = lines[first][found.end():]
    where = included[-1].removeprefix("In file included from ").rstrip(":") if included else MAIN_FILE
    return (f"{Path(found['file']).name}:{found['line']}: error: {message}\n"
            f"(in a header that {where.replace(MAIN_FILE, source.name)} includes)")


def verifier_error_lines(log: str, source: Path) -> str:
    """The verifier's complaint, the source line it was checking, and a hint.

    The log lists instructions (`12: (71) r2 = ...`) with source lines (`; code @ main.c:N`)
    between them; the complaint is the text after the last instruction. BCC's line numbers
    count its own prelude, so the source line is found again by its text, in the program and
    then in the course's headers.
    """
    lines = [line for line in log.splitlines() if line.strip()]
    insn = re.compile(r"^\d+: \(")
    last_insn = max((i for i, line in enumerate(lines) if insn.match(line)), default=-1)
    complaint = [
        line
        for line in lines[last_insn + 1 :]
        if not line.startswith(("processed ", "bpf: Failed", "HINT:", "-- "))
    ]
    decisive = complaint[:3]
    quoted = [line for line in lines[: last_insn + 1] if line.startswith("; ")]
    if quoted:
        code = re.sub(r"\s*@ \S+:\d+$", "", quoted[-1][2:]).strip()
        decisive.append(f"at {find_line(code, [source, *sorted(BPF_INCLUDE.glob('*.h'))])}: {code}")
    text = " ".join(complaint)
    hints = [hint for key, hint in VERIFIER_HINTS.items() if key in text]
    if hints:
        decisive.append(f"hint: {hints[0]}")
    return "\n".join(decisive)


def find_line(code: str, files: list[Path]) -> str:
    """`file:line` of the first line holding `code` in `files`, or the first file's name."""
    for path in files:
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if code and code in text:
                return f"{path.name}:{number}"
    return files[0].name


@dataclass
class Program:
    """A compiled BCC module with one loaded entry function."""

    bpf: object  # bcc.BPF; typed loosely so that importing this module does not need BCC
    name: str
    hook: str
    fd: int
    source: Path
    attachments: list[tuple[str, str, str]] = field(default_factory=list)

    def table(self, name: str):
        """A map of the program, by the name it has in the C source."""
        return self.bpf[name.encode()]

    def percpu_sums(self, name: str) -> dict[int, int]:
        """A per-CPU array's values, summed over CPUs, for the keys that are non-zero."""
        table = self.table(name)
        return {k.value: sum(v) for k, v in table.items() if sum(v)}

    def close(self) -> None:
        """Detach from every interface it was attached to, then free it."""
        for netns, ifname, where in reversed(self.attachments):
            with contextlib.suppress(Exception):
                if where == "xdp":
                    detach_xdp(netns, ifname)
                else:
                    detach_tc(netns, ifname)
        self.attachments.clear()
        self.bpf.cleanup()


def load(source: Path, entry: str, hook: str, cflags: tuple[str, ...] = ()) -> Program:
    """Compile `source` with BCC and load `entry` at `hook` ("xdp" or "tc").

    Raises ProgramError with the decisive compiler or verifier lines on failure.
    """
    from bcc import BPF  # Debian's python3-bpfcc; imported late so the CLI starts without it

    source = Path(source)
    flags = [f"-I{BPF_INCLUDE}", *cflags]
    with captured_stderr() as log:
        try:
            bpf = BPF(src_file=str(source).encode(), cflags=flags)
        except Exception:
            failed = True
        else:
            failed = False
    if failed and "Cannot allocate memory" in log[0]:
        raise ProgramError(
            "load",
            f"The kernel refused to create the maps of {source.name}: they need more memory than a "
            "graded program may use. Declare smaller maps.",
            next(line for line in log[0].splitlines() if "Cannot allocate memory" in line),
            log[0],
        )
    if failed:
        raise ProgramError(
            "compile",
            f"{source.name} does not compile.",
            compile_error_lines(log[0], source),
            log[0],
        )
    prog_type = BPF.XDP if hook == "xdp" else BPF.SCHED_CLS
    with captured_stderr() as log:
        try:
            fn = bpf.load_func(entry.encode(), prog_type)
        except Exception as exc:
            error = str(exc)
        else:
            error = ""
    if error:
        bpf.cleanup()
        if "Unknown program" in error or "not found" in error:
            raise ProgramError("verify", f"{source.name} has no function called {entry}().")
        raise ProgramError(
            "verify",
            f"The kernel's verifier rejected {entry}() in {source.name}.",
            verifier_error_lines(log[0], source),
            log[0],
        )
    return Program(bpf=bpf, name=entry, hook=hook, fd=fn.fd, source=source)


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


def outside_event_loop(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` in a worker thread when the caller's thread runs an asyncio loop.

    pyroute2 0.9 drives netlink with an asyncio loop of its own, which cannot start inside a
    running one, and a Jupyter kernel runs every cell inside one.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return func(*args, **kwargs)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink") as worker:
            return worker.submit(func, *args, **kwargs).result()

    return wrapper


def existing_netns(name: str) -> NetNS:
    """A netlink socket in netns `name`. Unlike pyroute2's default, never creates the netns."""
    return NetNS(name, flags=0)


def _index(ns: NetNS, ifname: str) -> int:
    found = ns.link_lookup(ifname=ifname)
    if not found:
        raise ProgramError("attach", f"There is no interface {ifname} in this namespace.")
    return found[0]


@outside_event_loop
def attach_xdp(netns: str, ifname: str, fd: int, mode: str = "native") -> str:
    """Attach the XDP program `fd` to `ifname` in `netns`; return the mode it runs in.

    Native (driver) mode is tried first. If the driver refuses it, generic mode is used and a
    warning says so: a silent fall-back would make every measurement lie.
    """
    with existing_netns(netns) as ns:
        index = _index(ns, ifname)
        try:
            ns.link("set", index=index, xdp_fd=fd, xdp_flags=XDP_MODES[mode])
            return mode
        except Exception as exc:
            if mode != "native":
                raise ProgramError("attach", f"Cannot attach XDP to {ifname}: {exc}") from exc
            warnings.warn(
                f"{ifname}: native XDP refused ({exc}); attached in generic (skb) mode instead",
                stacklevel=2,
            )
            ns.link("set", index=index, xdp_fd=fd, xdp_flags=XDP_FLAGS_SKB_MODE)
            return "generic"


@outside_event_loop
def xdp_mode(netns: str, ifname: str) -> str | None:
    """The mode of the XDP program on `ifname` ("native", "generic") or None."""
    with existing_netns(netns) as ns:
        info = ns.link("get", index=_index(ns, ifname))[0].get("IFLA_XDP")
    attrs = dict(info["attrs"]) if info else {}
    if "IFLA_XDP_DRV_PROG_ID" in attrs:
        return "native"
    if "IFLA_XDP_SKB_PROG_ID" in attrs:
        return "generic"
    return None


@outside_event_loop
def detach_xdp(netns: str, ifname: str) -> None:
    """Remove whatever XDP program `ifname` carries, in either mode."""
    with existing_netns(netns) as ns:
        index = _index(ns, ifname)
        for flags in XDP_MODES.values():
            with contextlib.suppress(Exception):
                ns.link("set", index=index, xdp_fd=-1, xdp_flags=flags)


@outside_event_loop
def attach_tc(netns: str, ifname: str, fd: int, name: str, direction: str = "ingress") -> None:
    """Attach the SCHED_CLS program `fd` at clsact ingress or egress, in direct-action mode."""
    with existing_netns(netns) as ns:
        index = _index(ns, ifname)
        with contextlib.suppress(Exception):  # the qdisc may be there already
            ns.tc("add", "clsact", index)
        ns.tc(
            "add-filter", "bpf", index, ":1", fd=fd, name=name,
            parent=TC_PARENTS[direction], classid=1, direct_action=True,
        )


@outside_event_loop
def detach_tc(netns: str, ifname: str) -> None:
    """Remove the clsact qdisc, and with it every TC program on `ifname`."""
    with existing_netns(netns) as ns, contextlib.suppress(Exception):
        ns.tc("del", "clsact", _index(ns, ifname))


def attach(program: Program, netns: str, ifname: str, **options: str) -> str:
    """Attach `program` at its own hook; remember it so that `program.close()` detaches it."""
    if program.hook == "xdp":
        result = attach_xdp(netns, ifname, program.fd, **options)
    else:
        direction = options.get("direction", "ingress")
        attach_tc(netns, ifname, program.fd, program.name, direction)
        result = f"tc {direction}"
    program.attachments.append((netns, ifname, program.hook))
    return result
