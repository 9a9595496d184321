"""Fixtures of the graded suites: the submission, its program loaded once, the topology.

A suite module names its lab (`LAB = "hello-xdp"`); the program is compiled and loaded once per
module and shared by its tests, and the topology is built once per module too. A program that
does not compile or load fails every test of the module with the same plain-words message. A
question set's suites read the submission's answers file instead (`answers`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from bpflab.attach import attach
from bpflab.course.labs import Lab, load_lab
from bpflab.gym import Gym, load_gym
from bpflab.parts import Parts, load_parts
from bpflab.programs import Program, ProgramError, load
from bpflab.topology import Topology
from grader.checks import fail


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--submission", help="folder holding the lab's file (default: the lab's reference)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): the points a graded test is worth")


def submitted(request: pytest.FixtureRequest, lab: Lab) -> Path:
    """The lab's file in the submission folder, or the reference when no folder is given."""
    folder = request.config.getoption("--submission")
    return Path(folder) / lab.program if folder else lab.reference


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Lab:
    return load_lab(request.module.LAB)


@pytest.fixture(scope="session")
def loaded() -> dict[str, Program | ProgramError | Gym | Parts]:
    """Each lab's program (or gym), or why it failed, by lab id: a lab's suites share it."""
    programs: dict[str, Program | ProgramError | Gym | Parts] = {}
    yield programs
    for program in programs.values():
        if not isinstance(program, ProgramError):  # a Program, a Gym or a lab's Parts
            program.close()


@pytest.fixture(scope="module")
def program(request: pytest.FixtureRequest, lab: Lab, loaded: dict[str, Program | ProgramError]) -> Program:
    """The submission's program, compiled and loaded once per lab, for all its modules."""
    if lab.id not in loaded:
        source = submitted(request, lab)
        try:
            if not source.is_file():
                raise ProgramError("compile", f"The submission has no file called {lab.program}.")
            loaded[lab.id] = load(source, lab.entry, lab.hook)
        except ProgramError as error:
            loaded[lab.id] = error
    if isinstance(loaded[lab.id], ProgramError):
        raise loaded[lab.id]
    return loaded[lab.id]


def load_once(request: pytest.FixtureRequest, lab: Lab, loaded: dict, loader: Callable[[Path], object]):
    """Load the submission with `loader` once per lab, for all its modules; their refusals are
    per program inside what it returns. A missing file fails every test with the same words."""
    if lab.id not in loaded:
        source = submitted(request, lab)
        if not source.is_file():
            raise ProgramError("compile", f"The submission has no file called {lab.program}.")
        loaded[lab.id] = loader(source)
    return loaded[lab.id]


@pytest.fixture(scope="module")
def gym(request: pytest.FixtureRequest, lab: Lab, loaded: dict) -> Gym:
    """A gym lab's exercises, each loaded or refused on its own (bpflab.gym), once per lab."""
    return load_once(request, lab, loaded, lambda source: load_gym(source, lab.hook))


@pytest.fixture(scope="module")
def parts(request: pytest.FixtureRequest, lab: Lab, loaded: dict) -> Parts:
    """A several-program lab's parts (bpflab.tcp_state), each loaded or refused on its own."""
    return load_once(request, lab, loaded, lambda source: load_parts(source, lab))


@pytest.fixture(scope="module")
def topology():
    """Client and server namespaces joined by veth, built once for the module."""
    with Topology() as topo:
        yield topo


@pytest.fixture(scope="module")
def attached(program: Program, topology: Topology) -> Program:
    """The program attached on the server's veth (native XDP, or TC ingress)."""
    attach(program, topology.server.netns, topology.server.ifname)
    return program


@pytest.fixture(scope="module")
def answers(request: pytest.FixtureRequest, lab: Lab) -> dict:
    """A question set's answers: the submission's TOML file, read once per module."""
    path = submitted(request, lab)
    if not path.is_file():
        fail(f"The submission has no file called {lab.program}.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        fail(f"{lab.program} is not valid TOML: {exc}.")
