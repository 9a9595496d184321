"""The student release: everything a student needs, and no solution.

Built from the one source of truth: starters from the references in bpf/, notebooks with their
`solution` cells emptied, the handouts, the runtime, the grader with its public suites, and
the provisioning. References and the grader's hidden suites (grader/tests/hidden) never enter
the release.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jupytext

from bpflab.labs import BPF_INCLUDE, HIDDEN_TESTS, NOTEBOOKS_DIR, ROOT, all_labs
from bpflab.starters import starter_source

# Copied as they are: the runtime, the grader, the machine recipes and the commands.
SHARED = (
    "bpflab", "grader", "provisioning",
    "Makefile", "Vagrantfile", "requirements.txt", "constraints.txt", "pyproject.toml",
)
COURSE_PROGRAMS = ("maps_tour.c",)  # programs in bpf/ that students read and run, not solutions
SOLUTION_TAG = "solution"
UNWANTED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


def ignored(folder: str, names: list[str]) -> set[str]:
    """What copytree leaves out: build leftovers, and the instructor-only tests."""
    hidden = {HIDDEN_TESTS.name} if Path(folder).resolve() == HIDDEN_TESTS.parent else set()
    return set(UNWANTED(folder, names)) | hidden


def student_notebook(source: Path, dest: Path) -> None:
    """Write `source` (a jupytext .py) as an .ipynb whose solution cells hold only a TODO."""
    notebook = jupytext.read(source)
    for cell in notebook.cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            first = cell.source.splitlines()[0] if cell.source else ""
            hint = first.lstrip("# ").strip() if first.startswith("#") else "write this step"
            cell.source = f"# TODO: {hint}\n"
            cell.outputs = []
    jupytext.write(notebook, dest, fmt="ipynb")


def build(dest: Path) -> Path:
    """Build the release in `dest` (replaced if it exists); return it."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in SHARED:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=ignored)
        elif path.exists():
            shutil.copy2(path, dest / name)
    shutil.copytree(BPF_INCLUDE, dest / "bpf" / "include", ignore=ignored)
    for name in COURSE_PROGRAMS:
        shutil.copy2(BPF_INCLUDE.parent / name, dest / "bpf" / name)
    (dest / "notebooks").mkdir()
    for lab in all_labs():
        folder = dest / "labs" / lab.id
        shutil.copytree(lab.folder, folder, ignore=ignored)
        (folder / lab.program).write_text(starter_source(lab.reference.read_text()))
        notebook = NOTEBOOKS_DIR / f"{lab.notebook}.py"
        if notebook.exists():
            student_notebook(notebook, dest / "notebooks" / f"{lab.notebook}.ipynb")
    readme = ROOT / "labs" / "README.md"
    if readme.exists():
        shutil.copy2(readme, dest / "README.md")
    return dest
