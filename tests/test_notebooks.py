"""Every notebook is paired with its .py, and runs top to bottom against the references."""

from __future__ import annotations

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from bpflab.course.labs import NOTEBOOKS_DIR, ROOT, all_labs

# Every lab's notebook, and any other one.
NOTEBOOKS = sorted({lab.notebook for lab in all_labs()} | {path.stem for path in NOTEBOOKS_DIR.glob("*.py")})
CELL_TIMEOUT = 300
ARTIFACTS = ROOT / "artifacts" / "notebooks"


def cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_and_py_are_in_sync(name):
    paired = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
    notebook = jupytext.read(NOTEBOOKS_DIR / f"{name}.ipynb")
    assert cells(notebook) == cells(paired), f"run: jupytext --sync notebooks/{name}.py"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name):
    notebook = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    try:
        client.execute()
    finally:  # keep what ran, for a person to look at (CI keeps artifacts/)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, ARTIFACTS / f"{name}.ipynb")
    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors
