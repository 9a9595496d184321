"""Fixtures of the graded suites: the submission, its program loaded once, the topology.

A suite module names its lab (`LAB = "hello-xdp"`); the program is compiled and loaded once per
module and shared by its tests, and the topology is built once per module too. A program that
does not compile or load fails every test of the module with the same plain-words message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bpflab.labs import BPF_DIR, Lab, load_lab
from bpflab.programs import Program, ProgramError, attach, load
from bpflab.topology import Topology


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--submission", default=str(BPF_DIR), help="folder holding the lab's program file")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): the points a graded test is worth")


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Lab:
    return load_lab(request.module.LAB)


@pytest.fixture(scope="session")
def loaded() -> dict[str, Program | ProgramError]:
    """Each lab's program, or why it failed, by lab id: a lab's public and hidden suites share it."""
    programs: dict[str, Program | ProgramError] = {}
    yield programs
    for program in programs.values():
        if isinstance(program, Program):
            program.close()


@pytest.fixture(scope="module")
def program(request: pytest.FixtureRequest, lab: Lab, loaded: dict[str, Program | ProgramError]) -> Program:
    """The submission's program, compiled and loaded once per lab, for all its modules."""
    if lab.id not in loaded:
        source = Path(request.config.getoption("--submission")) / lab.program
        try:
            if not source.is_file():
                raise ProgramError("compile", f"The submission has no file called {lab.program}.")
            loaded[lab.id] = load(source, lab.entry, lab.hook)
        except ProgramError as error:
            loaded[lab.id] = error
    if isinstance(loaded[lab.id], ProgramError):
        raise loaded[lab.id]
    return loaded[lab.id]


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
