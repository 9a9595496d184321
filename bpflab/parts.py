"""Labs of several programs in one file (tcp-state, xdp-cache): each part at its own hook.

The parts share the file's maps, so the file is compiled once and each part loaded from it one
by one: one the verifier refuses fails only its own tests (`load_parts`). Where each part goes
is the lab's manifest (`[parts]`): its hook, and for TC its direction (`attach_parts`).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bpflab.attach import attach, detach_tc, detach_xdp
from bpflab.course.labs import Lab
from bpflab.oracles import echo
from bpflab.programs import CompilerWarning, Program, ProgramError, compile_source


@dataclass
class Parts:
    """The programs of one file, by entry: each loaded, or with why not."""

    source: Path
    programs: dict[str, Program] = field(default_factory=dict)
    refused: dict[str, ProgramError] = field(default_factory=dict)
    module: object = None  # the compiled BCC module they share, freed by close()

    def __getitem__(self, entry: str) -> Program:
        """The loaded program, or its refusal raised (a test of that part fails with it)."""
        if entry in self.refused:
            raise self.refused[entry]
        return self.programs[entry]

    def close(self) -> None:
        for program in self.programs.values():
            program.close()
        if self.module is not None:
            self.module.cleanup()
            self.module = None


def load_parts(source: Path, lab: Lab) -> Parts:
    """Compile `source` once, then load each part of `lab` at its hook.

    A file that does not compile refuses every part with the same explanation; the verifier
    judges each part on its own. Warnings (CompilerWarning) are kept per part, not raised. A
    file with a `server` map is told the server's addresses (programs that answer frames
    answer those to its own MAC only).
    """
    parts = Parts(Path(source))
    try:
        compiled = compile_source(parts.source, lab.hook)
    except ProgramError as error:
        parts.refused = {entry: error for entry in lab.entries}
        return parts
    parts.module = compiled.bpf
    for entry in lab.entries:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CompilerWarning)  # kept in program.warnings
                parts.programs[entry] = compiled.load(entry, owns_module=False, hook=lab.hook_of(entry))
        except ProgramError as error:
            parts.refused[entry] = error
    loaded = next(iter(parts.programs.values()), None)
    with contextlib.suppress(KeyError):  # KeyError: a file without a `server` map
        if loaded:
            echo.configure(loaded)
    return parts


def attach_part(program: Program, lab: Lab, netns: str, ifname: str) -> str:
    """Attach one part where the manifest puts it: XDP, or TC ingress or egress."""
    options = {"direction": lab.direction_of(program.name)} if program.hook == "tc" else {}
    return attach(program, netns, ifname, **options)


def detach_all(netns: str, ifname: str) -> None:
    """Take every XDP and TC program off `ifname` (TC's go with their clsact qdisc)."""
    detach_xdp(netns, ifname)
    detach_tc(netns, ifname)
