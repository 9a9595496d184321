"""What a submission may hand the compiler: one small text file that includes only known headers.

Students' C is compiled by BCC as root, so the file is screened before any compiler sees it.
The rules are simple enough to state in one message each:

- only the lab's program file is read, never followed through a symlink, and it must be a
  regular UTF-8 text file of at most MAX_BYTES;
- `#include` names a header (`.h`) by a plain relative path, found among the course's headers
  (bpf/include) or the kernel's: no absolute path, no `..`, no computed `#include MACRO`;
- no inline assembly (`asm`, `.incbin`), no `_Pragma` and only the loop pragmas, no `##`
  (token pasting is the one way to build an `asm` keyword out of harmless pieces), no
  digraph `%:` (a second spelling of `#`) and no trigraphs.

The program is then copied alone into a fresh folder for the compiler, so a quoted include
cannot find another file of the submission either. A question set's answers file meets the same
file rules and must parse as TOML; no compiler ever sees it.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path

from bpflab.course.labs import Lab

MAX_BYTES = 64 * 1024
ALLOWED_PRAGMAS = re.compile(r"^(unroll|nounroll|once|clang loop\b|GCC unroll\b)")
DIRECTIVE = re.compile(r"^\s*#\s*(\w+)\s*(.*)$")
INCLUDE_ARGUMENT = re.compile(r'^(<([^<>"]*)>|"([^<>"]*)")\s*$')
HEADER_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.h$")
FORBIDDEN = {
    re.compile(r"\b(asm|__asm__|__asm)\b"): "inline assembly (`asm`) is not allowed",
    re.compile(r"\.incbin\b"): "`.incbin` is not allowed",
    re.compile(r"\b_Pragma\b"): "`_Pragma` is not allowed; use `#pragma unroll` for loops",
    re.compile(r"##"): "token pasting (`##`) is not allowed",
    re.compile(r"%:"): "the digraph `%:` is not allowed; write `#`",
    re.compile(r"\?\?[=/'()!<>-]"): "trigraphs (`??=` and the like) are not allowed",
}
COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)


class Rejected(Exception):
    """The submission cannot be compiled safely; the message says exactly why, for the student."""


def read_program(lab: Lab, submission: Path) -> str:
    """The text of the lab's program file in `submission`, or Rejected saying what is wrong."""
    path = submission / lab.program
    if not any(submission.iterdir()):
        raise Rejected(f"The submission folder is empty: it must hold {lab.program}.")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise Rejected(f"The submission has no file called {lab.program}.") from None
    except OSError as exc:
        if path.is_symlink():
            raise Rejected(f"{lab.program} is a symbolic link; submit the file itself.") from None
        raise Rejected(f"{lab.program} cannot be read ({exc.strerror}).") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise Rejected(f"{lab.program} is not a regular file.")
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise Rejected(f"{lab.program} is larger than {MAX_BYTES // 1024} KiB, the limit for a program file.")
    if not data.strip():
        raise Rejected(f"{lab.program} is empty.")
    if b"\0" in data:
        raise Rejected(f"{lab.program} is a binary file (it holds NUL bytes); submit the text file.")
    try:
        text = data.decode("utf-8-sig")  # an editor's byte-order mark is not part of the text
    except UnicodeDecodeError as exc:
        raise Rejected(f"{lab.program} is not UTF-8 text (byte {exc.start} is not).") from None
    if lab.is_program:
        screen(text, lab)
    else:
        check_toml(text, lab)
    return text


def check_toml(text: str, lab: Lab) -> None:
    """Raise Rejected, with the parser's line and column, unless `text` is TOML."""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise Rejected(f"{lab.program} is not valid TOML ({exc}): an answer is a number, or text "
                       'in double quotes like "b".') from None
    except RecursionError:  # tomllib recurses once per nested array or table
        raise Rejected(f"{lab.program} nests arrays or tables too deeply; an answer is a number, or "
                       'text in double quotes like "b".') from None


def screen(text: str, lab: Lab) -> None:
    """Raise Rejected, naming the line, for the first construct outside the include sandbox."""
    code = COMMENTS.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text.replace("\\\n", "  "))
    for number, line in enumerate(code.splitlines(), 1):
        where = f"{lab.program}:{number}"
        for pattern, reason in FORBIDDEN.items():
            if pattern.search(line):
                raise Rejected(f"{where}: {reason}.")
        directive = DIRECTIVE.match(line)
        if not directive:
            continue
        name, argument = directive.groups()
        if name in ("include_next", "import"):
            raise Rejected(f"{where}: `#{name}` is not allowed; use `#include`.")
        if name == "include":
            check_include(argument.strip(), where)
        if name == "pragma" and not ALLOWED_PRAGMAS.match(argument.strip()):
            raise Rejected(f"{where}: `#pragma {argument.strip()}` is not allowed (only loop pragmas are).")
    if not re.search(rf"\b{re.escape(lab.entry)}\s*\(", code):
        raise Rejected(f"{lab.program} has no function called {lab.entry}(): keep the starter's name.")


def check_include(argument: str, where: str) -> None:
    match = INCLUDE_ARGUMENT.match(argument)
    if not match:
        raise Rejected(f"{where}: `#include {argument}` must name a header in quotes or <angle brackets>.")
    name = match.group(2) if match.group(2) is not None else match.group(3)
    if name.startswith("/"):
        raise Rejected(f"{where}: `#include {argument}`: absolute paths are not allowed.")
    if ".." in Path(name).parts:
        raise Rejected(f"{where}: `#include {argument}`: `..` is not allowed in an include path.")
    if not HEADER_PATH.match(name):
        raise Rejected(f"{where}: `#include {argument}`: only headers (`name.h`) of the course or the "
                       "kernel may be included.")
