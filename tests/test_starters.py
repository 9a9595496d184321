"""Starters are made from the references, and every one compiles and passes the verifier."""

from __future__ import annotations

import tomllib
import warnings

import pytest

from bpflab.course.labs import all_labs, program_labs
from bpflab.course.starters import split_regions, starter_source, telltale_lines
from bpflab.gym import load_gym
from bpflab.parts import load_parts
from bpflab.programs import CompilerWarning, load

REFERENCE = """int f(void)
{
\t/* SOLUTION: return the answer */
\tint answer = 6 * 7;
\treturn answer;
\t/* END SOLUTION */
\treturn 0;
}
"""


def test_region_becomes_a_todo_at_the_same_indent():
    assert starter_source(REFERENCE) == "int f(void)\n{\n\t/* TODO: return the answer */\n\treturn 0;\n}\n"


def test_telltale_lines_are_the_solution_only():
    assert telltale_lines(REFERENCE) == {"int answer = 6 * 7;", "return answer;"}


@pytest.mark.parametrize(
    "broken",
    ["/* SOLUTION: a */\n/* SOLUTION: b */\n", "/* END SOLUTION */\n", "/* SOLUTION: never closed */\nx;\n",
     "# SOLUTION: a\nx = 1\n# END SOLUTIONS\n", "/* SOLUTION: a */\nx;\n/* END SOLUTION x */\n"],
)
def test_unbalanced_markers_are_refused(broken):
    with pytest.raises(ValueError):
        split_regions(broken)


PROGRAMS = [lab for lab in program_labs() if lab.kind == "program"]
GYMS = [lab for lab in program_labs() if lab.kind == "gym"]


@pytest.mark.parametrize("lab", PROGRAMS, ids=lambda lab: lab.id)
def test_starter_compiles_and_verifies(lab, tmp_path):
    source = tmp_path / lab.program
    source.write_text(starter_source(lab.reference.read_text()))
    assert "TODO" in source.read_text()
    if not lab.parts:
        load(source, lab.entry, lab.hook).close()
        return
    parts = load_parts(source, lab)  # several programs: each part at its own hook
    try:
        assert not parts.refused, {entry: error.explain() for entry, error in parts.refused.items()}
        assert not [p.warnings for p in parts.programs.values() if p.warnings]
    finally:
        parts.close()


@pytest.mark.parametrize("lab", GYMS, ids=lambda lab: lab.id)
def test_gym_starter_has_every_exercise_refused_or_warned(lab, tmp_path):
    """A gym's starter is its exercises' mistakes: each refused, or loaded with a warning."""
    source = tmp_path / lab.program
    source.write_text(starter_source(lab.reference.read_text()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        gym = load_gym(source, lab.hook)
    try:
        for exercise in gym.exercises:
            assert exercise.name in gym.refused or gym.warnings(exercise.name), gym.report(exercise.name)
    finally:
        gym.close()


TOML_REFERENCE = """# 1. the answer?
# SOLUTION: think
answer = 42
# STARTER: answer = ""
# END SOLUTION
"""


def test_toml_regions_keep_their_comment_syntax():
    assert starter_source(TOML_REFERENCE) == '# 1. the answer?\n# TODO: think\nanswer = ""\n'


@pytest.mark.parametrize("lab", [lab for lab in all_labs() if not lab.is_program], ids=lambda lab: lab.id)
def test_question_starter_is_every_key_unanswered(lab):
    key = tomllib.loads(lab.reference.read_text())
    starter = tomllib.loads(starter_source(lab.reference.read_text()))
    assert key and set(starter) == set(key) and set(starter.values()) == {""}
