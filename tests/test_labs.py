"""Every lab is complete and consistent: one name, found by every part of the course."""

from __future__ import annotations

import ast

import pytest

from bpflab.labs import NOTEBOOKS_DIR, all_labs, load_lab

LABS = all_labs()


def suite_points(lab) -> int:
    """The points written on the suite's tests (@points(n)), read without running anything."""
    tree = ast.parse(lab.suite.read_text())
    total = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            marks = [
                d for d in node.decorator_list
                if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "points"
            ]
            assert len(marks) == 1, f"{lab.suite.name}::{node.name} needs exactly one @points(n)"
            total += marks[0].args[0].value
    return total


def test_there_are_labs():
    assert "hello-xdp" in [lab.id for lab in LABS]


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.id)
def test_lab_has_every_part(lab):
    assert lab.reference.is_file()
    assert f"int {lab.entry}(" in lab.reference.read_text()
    assert lab.suite.is_file()
    assert (lab.folder / "README.md").is_file()
    assert (NOTEBOOKS_DIR / f"{lab.notebook}.py").is_file()
    assert (NOTEBOOKS_DIR / f"{lab.notebook}.ipynb").is_file()
    assert f'LAB = "{lab.id}"' in lab.suite.read_text()


@pytest.mark.parametrize("lab", LABS, ids=lambda lab: lab.id)
def test_suite_points_add_up_to_the_manifest(lab):
    assert suite_points(lab) == lab.points


def test_unknown_lab_names_the_known_ones():
    with pytest.raises(KeyError, match="hello-xdp"):
        load_lab("no-such-lab")
