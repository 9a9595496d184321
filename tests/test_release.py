"""The student release holds the starters, handouts and notebooks, and no solution text."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from bpflab.course.labs import HIDDEN_TESTS, LABS_DIR, all_labs
from bpflab.course.release import COURSE_PROGRAMS, COURSE_TOOLS, MANIFEST, SOLUTION_TAG, build
from bpflab.course.starters import starter_source, telltale_lines


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return build(tmp_path_factory.mktemp("release") / "student")[0]


def release_texts(release):
    for path in release.rglob("*"):
        if path.is_file():
            yield path, path.read_text(errors="replace")


def test_release_has_no_solution_text(release):
    labs = all_labs()
    # A line one lab's starter gives away (parsing Ethernet, say) is no secret in another lab.
    public = {line.strip() for lab in labs for line in starter_source(lab.reference.read_text()).splitlines()}
    telltales = {line: lab.id for lab in labs for line in telltale_lines(lab.reference.read_text())
                 if line not in public}
    assert telltales, "the references must have solution regions"
    leaks = [(str(path.relative_to(release)), line) for path, text in release_texts(release)
             for line in telltales if line in text]
    assert not leaks, f"solution text in the release: {leaks}"


def test_release_make_lists_only_what_works_there(release):
    """No tests, references or bench tools in the release: their targets stay out of its Makefile."""
    shown = subprocess.run(["make", "help"], cwd=release, capture_output=True, text=True, check=True).stdout
    targets = set(re.findall(r"^  make (\S+)", shown, re.M))
    assert targets == {"help", "provision", "lab", "doctor", "check", "clean"}, shown


def test_release_has_no_reference_program(release):
    """Only the headers, the course programs students read and run, and the tools the checks load."""
    shipped = sorted(p.name for p in (release / "bpf").iterdir())
    assert shipped == sorted(["include", "tools", *COURSE_PROGRAMS])
    assert sorted(p.name for p in (release / "bpf" / "tools").iterdir()) == sorted(COURSE_TOOLS)


@pytest.mark.parametrize("lab", all_labs(), ids=lambda lab: lab.id)
def test_release_has_each_lab(release, lab):
    folder = release / "labs" / lab.id
    assert (folder / "README.md").is_file() and (folder / "lab.toml").is_file()
    assert "TODO" in (folder / lab.program).read_text()
    notebook = json.loads((release / "notebooks" / f"{lab.notebook}.ipynb").read_text())
    for cell in notebook["cells"]:
        if SOLUTION_TAG in cell["metadata"].get("tags", []):
            assert "".join(cell["source"]).startswith("# TODO")
            assert not cell.get("outputs")


def test_release_has_no_hidden_test(release):
    hidden = [lab for lab in all_labs() if lab.hidden_suite.is_file()]
    assert hidden, "some lab must have instructor-only tests for this test to mean something"
    assert not (release / "grader" / "tests" / HIDDEN_TESTS.name).exists()
    texts = [lab.hidden_suite.read_text() for lab in hidden]
    names = {name for text in texts for name in re.findall(r"^def (test_\w+)", text, re.M)}
    docstrings = set(re.findall(r'^    """(.{20,})"""$', "\n".join(texts), re.M))
    leaks = [(str(path.relative_to(release)), word) for path, text in release_texts(release)
             for word in names | docstrings if word in text]
    assert not leaks, f"hidden tests in the release: {leaks}"


RUN_NOTEBOOK = """
import sys
import nbformat
from nbclient import NotebookClient
notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, timeout=300, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[2]}}).execute()
print("".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])))
"""


@pytest.mark.slow
def test_measure_notebook_runs_in_the_release_against_the_starters(release):
    """Notebook 04 has nothing to fill in: a student runs it as it is, with unfinished labs too."""
    notebooks = release / "notebooks"
    env = {**os.environ, "PYTHONPATH": str(release)}  # the release's runtime, not this checkout's
    done = subprocess.run([sys.executable, "-c", RUN_NOTEBOOK, str(notebooks / "04-measure.ipynb"),
                           str(notebooks)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for lab in ("xdp-icmp", "tc-icmp", "xdp-dns"):
        assert f"Your {lab} program does not answer yet" in done.stdout
    assert "not in the student release" in done.stdout  # the bench's own tools stay out
    assert "recorded 2026-" in done.stdout


REFUSED_EXERCISES = ("bounds", "null", "loop", "stack", "uninit", "offset", "helper", "verdict", "signature")
ENTRIES = [f"gym_{name}" for name in REFUSED_EXERCISES]
WARNED_EXERCISES = ("uninit", "verdict")  # the kernel loads them: the course's checks warn


@pytest.mark.slow
def test_verifier_notebook_survives_every_starter_mistake_in_the_release(release):
    """Notebook 05 on the gym's starter: every exercise refused or warned about, in words, and
    the kernel lives through LLVM's refusal of a 604-byte stack."""
    notebooks = release / "notebooks"
    env = {**os.environ, "PYTHONPATH": str(release)}
    done = subprocess.run([sys.executable, "-c", RUN_NOTEBOOK, str(notebooks / "05-verifier.ipynb"),
                           str(notebooks)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for number, (name, entry) in enumerate(zip(REFUSED_EXERCISES, ENTRIES, strict=True), 1):
        shown = f"Exercise {number} ({name}), {entry}(): "
        assert shown + ("loads, but will misbehave" if name in WARNED_EXERCISES else "refused") in done.stdout
    assert "512 bytes" in done.stdout and "verifier_gym.c:" in done.stdout
    assert "Traceback" not in done.stdout


def test_building_again_keeps_the_students_work(tmp_path):
    """`make release` over a release a student works in (a course update): files still as shipped
    are updated, the student's changed and own files stay, and the course's new version of a
    changed file lands beside it."""
    dest, kept = build(tmp_path / "student")
    assert kept == []
    lab = dest / "labs" / "hello-xdp"
    (lab / "hello_xdp.c").write_text("/* my work */\n")
    (lab / "notes.txt").write_text("mine")
    (lab / "README.md").write_text("the handout of an older course")
    icmp = dest / "labs" / "xdp-icmp" / "xdp_icmp_echo.c"
    icmp.write_text("/* my echo */\n")
    gone = dest / "labs" / "retired.md"
    gone.write_text("a handout the course no longer ships")
    manifest = json.loads((dest / MANIFEST).read_text())
    for path in (lab / "README.md", gone):
        manifest[str(path.relative_to(dest))] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["labs/xdp-icmp/xdp_icmp_echo.c"] = "0" * 64  # the older course shipped another starter
    (dest / MANIFEST).write_text(json.dumps(manifest))

    again, kept = build(dest)
    assert again == dest
    assert (lab / "hello_xdp.c").read_text() == "/* my work */\n"
    assert (lab / "notes.txt").read_text() == "mine"
    assert (lab / "README.md").read_text() == (LABS_DIR / "hello-xdp" / "README.md").read_text()
    assert icmp.read_text() == "/* my echo */\n"
    assert "TODO" in (icmp.parent / "xdp_icmp_echo.new.c").read_text()
    assert not gone.exists()
    assert kept == ["kept your labs/hello-xdp/hello_xdp.c",
                    "kept your labs/xdp-icmp/xdp_icmp_echo.c; the course's new version is "
                    "labs/xdp-icmp/xdp_icmp_echo.new.c"]


def test_a_release_without_a_manifest_keeps_only_the_students_areas(tmp_path):
    """A release built before the manifest existed: changed lab files stay (with the new version
    beside), the runtime is the course's and is replaced whole."""
    dest, _ = build(tmp_path / "student")
    (dest / MANIFEST).unlink()
    (dest / "labs" / "hello-xdp" / "hello_xdp.c").write_text("/* my work */\n")
    runtime = dest / "bpflab" / "packets.py"
    shipped = runtime.read_text()
    runtime.write_text(shipped + "# an older course's runtime\n")
    _, kept = build(dest)
    assert (dest / "labs" / "hello-xdp" / "hello_xdp.c").read_text() == "/* my work */\n"
    assert runtime.read_text() == shipped
    assert kept == ["kept your labs/hello-xdp/hello_xdp.c; the course's new version is "
                    "labs/hello-xdp/hello_xdp.new.c"]


@pytest.mark.slow
def test_tcp_state_notebook_and_check_run_in_the_release_against_the_starter(release, tmp_path):
    """Notebook 06 and `make check`'s grader on the tcp-state starter, in the release: every cell
    runs (the loss maker the checks load ships too), every table empty, the grade 0."""
    notebooks = release / "notebooks"
    env = {**os.environ, "PYTHONPATH": str(release)}
    done = subprocess.run([sys.executable, "-c", RUN_NOTEBOOK, str(notebooks / "06-tcp-state.ipynb"),
                           str(notebooks)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "xdp_syn_shield (xdp): loaded" in done.stdout and "Traceback" not in done.stdout
    graded = subprocess.run([sys.executable, "-m", "grader", "grade", str(release / "labs" / "tcp-state"),
                             "--lab", "tcp-state", "--results", str(tmp_path / "results.json")],
                            cwd=release, env=env, capture_output=True, text=True, timeout=900)
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert "Score: 0/29" in graded.stdout, graded.stdout  # the instructor's 2 points are not shipped
    assert "No such file" not in graded.stdout, graded.stdout
