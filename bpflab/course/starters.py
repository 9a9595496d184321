"""Student starters made from the references: the one source of truth for every solution.

In a reference program, a solution region is written

    /* SOLUTION: what the student must do here */
    ...the reference code...
    /* END SOLUTION */

and the starter keeps everything else, with the region replaced by `/* TODO: ... */` at the
same indentation. A line `/* STARTER: code */` inside a region is a comment in the reference
and becomes `code` in the starter: what a function must still do to compile and to pass every
packet (`return XDP_PASS;`). A question set's answer key (TOML) marks its regions the same way
in its own comments: `# SOLUTION: hint`, `# STARTER: key = ""`, `# END SOLUTION`. Notebook
cells tagged `solution` get the same treatment (see `release`).
"""

from __future__ import annotations

import re

COMMENTS = (("/* ", " */"), ("# ", ""))  # C's and TOML's: a TODO keeps its region's syntax


def marker(word: str) -> list[re.Pattern[str]]:
    """`word` (SOLUTION: or STARTER:) and its text, as a whole-line comment in each syntax."""
    return [re.compile(rf"^(?P<indent>\s*)(?P<open>{re.escape(opening)}){word}(?P<text>.*?)"
                       rf"(?P<close>{re.escape(closing)})\s*$") for opening, closing in COMMENTS]


def first_match(patterns: list[re.Pattern[str]], line: str) -> re.Match[str] | None:
    return next((m for pattern in patterns if (m := pattern.match(line))), None)


BEGIN, STARTER = marker("SOLUTION: "), marker("STARTER: ")
END = [re.compile(rf"^\s*{re.escape(opening)}END SOLUTION{re.escape(closing)}\s*$")
       for opening, closing in COMMENTS]
MIN_LEAK_LENGTH = 12  # shorter solution lines (`} else {`) are too generic to count as leaks
BARE_VERDICT = re.compile(r"^return [A-Z_]+;$")


def split_regions(text: str) -> tuple[list[str], list[str]]:
    """Return (starter lines, solution lines) of a reference source; unbalanced markers raise."""
    starter: list[str] = []
    solution: list[str] = []
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        begin, end, starter_line = (first_match(marks, line) for marks in (BEGIN, END, STARTER))
        if begin:
            if inside:
                raise ValueError(f"line {number}: SOLUTION inside another SOLUTION region")
            inside = True
            starter.append(f"{begin['indent']}{begin['open']}TODO: {begin['text']}{begin['close']}")
        elif end:
            if not inside:
                raise ValueError(f"line {number}: END SOLUTION without SOLUTION")
            inside = False
        elif inside and starter_line:
            starter.append(f"{starter_line['indent']}{starter_line['text']}")
        elif inside:
            solution.append(line)
        else:
            starter.append(line)
    if inside:
        raise ValueError("a SOLUTION region is never closed")
    return starter, solution


def starter_source(reference: str) -> str:
    """The student's starter file for a reference program."""
    return "\n".join(split_regions(reference)[0]) + "\n"


def telltale_lines(reference: str) -> set[str]:
    """Solution lines that would give the solution away if found in a release.

    Lines also present outside the regions, very short ones and bare verdicts (`return
    XDP_DROP;`, which handouts and notebooks show too) are not telltale: they give nothing away.
    """
    starter, solution = split_regions(reference)
    public = {line.strip() for line in starter}
    return {
        line.strip()
        for line in solution
        if len(line.strip()) >= MIN_LEAK_LENGTH and line.strip() not in public
        and not BARE_VERDICT.match(line.strip())
    }
