"""Why the compiler or the verifier refused a program, in words a student can act on.

Three things make the raw messages hard to use, and each has its answer here:

- *Where*: BCC compiles a rewritten copy of the program (`/virtual/main.c`, with its own
  prelude and `map.lookup()` turned into helper calls), so the line numbers in its messages are
  not the student's. `SourceMap` lines the rewritten copy (BCC prints it when asked) up with the
  student's file. The verifier's nearest `; code @ main.c:N` note may say line 0: walk back.
- *What to change*: `RULES` maps each common message to a hint, aware of the hook (a helper
  suggested at XDP must exist at XDP), naming the course's own helper where there is one.
- *What the kernel lets through*: root may read uninitialised stack, and a verdict that is no
  verdict is only found when the program runs. `uninitialised_keys` finds map keys that were
  never written; `stray_verdicts` finds a return value that is no action of its hook.
"""

from bpflab.explain.compiler import WARNINGS_SHOWN, compile_feedback, compiler_warnings, largest_locals
from bpflab.explain.dataflow import stray_verdicts, uninitialised_keys
from bpflab.explain.sourcemap import SourceMap
from bpflab.explain.verifier import RULES, verifier_feedback

__all__ = ["RULES", "WARNINGS_SHOWN", "SourceMap", "compile_feedback", "compiler_warnings", "largest_locals",
           "stray_verdicts", "uninitialised_keys", "verifier_feedback"]
