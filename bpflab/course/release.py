"""The student release: everything a student needs, and no solution.

Built from the one source of truth: starters from the references in bpf/, notebooks with their
`solution` cells emptied, the handouts, the runtime, the grader with its public suites, and
the provisioning. References and the grader's hidden suites (grader/tests/hidden) never enter
the release.

Building again over a release never deletes a student's work. The release records what it
shipped (MANIFEST: a digest per file); a later build replaces only files still exactly as
shipped. A file the student changed or made stays as it is, and where the course changed it
too, the new version lands beside it as `name.new.ext` for the student to merge.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import jupytext

from bpflab.course.labs import BPF_INCLUDE, BPF_TOOLS, HIDDEN_TESTS, NOTEBOOKS_DIR, ROOT, all_labs
from bpflab.course.starters import starter_source

# Copied as they are: the runtime, the grader, the machine recipes and the commands.
SHARED = (
    "bpflab", "grader", "provisioning",
    "Makefile", "Vagrantfile", "requirements.txt", "constraints.txt", "pyproject.toml",
)
COURSE_PROGRAMS = ("maps_tour.c",)  # programs in bpf/ that students read and run, not solutions
COURSE_TOOLS = ("tcp_dropper.c",)  # bpf/tools/ programs a lab's checks load (the rest: the bench's)
SOLUTION_TAG = "solution"
# Build leftovers; a test cache names the hidden tests an instructor ran, so it never ships.
UNWANTED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", ".pytest_cache",
                                  ".ruff_cache")
MANIFEST = ".release.json"  # in the release: the digest of every file as shipped
STUDENT_AREAS = ("labs/", "notebooks/")  # where students edit: what a release without a manifest keeps


def ignored(folder: str, names: list[str]) -> set[str]:
    """What copytree leaves out: build leftovers, and the instructor-only tests."""
    hidden = {HIDDEN_TESTS.name} if Path(folder).resolve() == HIDDEN_TESTS.parent else set()
    return set(UNWANTED(folder, names)) | hidden


def student_notebook(source: Path, dest: Path) -> None:
    """Write `source` (a jupytext .py) as an .ipynb whose solution cells hold only a TODO."""
    notebook = jupytext.read(source)
    for number, cell in enumerate(notebook.cells):
        cell.id = f"cell-{number}"  # not random: the same course builds the same release
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            first = cell.source.splitlines()[0] if cell.source else ""
            hint = first.lstrip("# ").strip() if first.startswith("#") else "write this step"
            cell.source = f"# TODO: {hint}\n"
            cell.outputs = []
    jupytext.write(notebook, dest, fmt="ipynb")


def build(dest: Path) -> tuple[Path, list[str]]:
    """Build the release in `dest`, or update the one there around the student's work; return it
    with a line for each student file kept (and where the course's new version went)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as staging:
        fresh = Path(staging) / "release"
        assemble(fresh)
        if not dest.exists():
            fresh.rename(dest)
            return dest, []
        return dest, update(dest, fresh)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_files(release: Path) -> dict[str, str]:
    """Every file of a freshly assembled release, by relative path, with its digest."""
    return {str(path.relative_to(release)): digest(path) for path in sorted(release.rglob("*"))
            if path.is_file() and path.name != MANIFEST}


def beside(path: Path) -> Path:
    """Where the course's new version of a file the student changed goes: hello_xdp.new.c."""
    return path.with_name(f"{path.stem}.new{path.suffix}")


def update(dest: Path, fresh: Path) -> list[str]:
    """Bring `dest` to the release in `fresh`, touching only files still as they were shipped.

    A release from before the manifest has none: then every differing file where students work
    (labs/, notebooks/) counts as theirs, which keeps too much rather than too little, and the
    rest (the runtime, the grader) is the course's, replaced so that it stays one whole.
    """
    now = shipped_files(fresh)
    try:
        before = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        before = {name: digest(dest / name) for name in now
                  if (dest / name).is_file() and not name.startswith(STUDENT_AREAS)}
    kept = []
    for name in sorted(before.keys() - now.keys()):  # files the course no longer ships
        path = dest / name
        if path.is_file() and digest(path) == before[name]:
            path.unlink()
    for name, new in now.items():
        path = dest / name
        ours = not path.exists() or digest(path) in (before.get(name), new)
        if ours:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(fresh / name, path)
        elif before.get(name) != new:  # the student changed it, and so did the course
            shutil.copy2(fresh / name, beside(path))
            kept.append(f"kept your {name}; the course's new version is {beside(Path(name))}")
        else:
            kept.append(f"kept your {name}")
    shutil.copy2(fresh / MANIFEST, dest / MANIFEST)
    return kept


def assemble(dest: Path) -> None:
    """Write a whole release into the new folder `dest`, with its manifest."""
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
    (dest / "bpf" / "tools").mkdir()
    for name in COURSE_TOOLS:
        shutil.copy2(BPF_TOOLS / name, dest / "bpf" / "tools" / name)
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
    (dest / MANIFEST).write_text(json.dumps(shipped_files(dest), indent=1) + "\n")
