"""The project's own recipe and code quality: the playbook, the Makefile, ruff."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bpflab.course.labs import ROOT

ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "provisioning" / "ansible.cfg")}


def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_make_help_lists_the_commands():
    shown = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("lab", "test", "doctor", "grade", "check", "release", "clean"):
        assert f"make {target} " in shown


PLAYBOOKS = ["provisioning/site.yml", "provisioning/grade_fleet.yml", "provisioning/grade_service.yml"]


@pytest.mark.slow
def test_second_provisioning_changes_nothing():
    """`make test` has just provisioned; running the playbook again must report changed=0."""
    done = subprocess.run(["ansible-playbook", "provisioning/site.yml"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    recap = re.search(r"changed=(\d+).*failed=(\d+)", done.stdout)
    assert recap and recap.groups() == ("0", "0"), done.stdout[-3000:]


def test_ansible_lint_is_clean():
    lint = [sys.executable, "-m", "ansiblelint", "--nocolor", *PLAYBOOKS]
    done = subprocess.run(lint, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_vagrantfile_validates(tmp_path):
    done = subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # ...and validation does catch a mistake, so that the check above means something.
    broken = (ROOT / "Vagrantfile").read_text().replace("libvirt.memory = 4096", "libvirt.memroy = 4096")
    (tmp_path / "Vagrantfile").write_text(broken)
    done = subprocess.run(["vagrant", "validate"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode != 0 and "memroy" in done.stdout + done.stderr


def provisions(project: Path, target: str) -> bool:
    """Would `make target` run the playbook? (`make -n` still runs the stamp's check for real.)"""
    done = subprocess.run(["make", "-n", target], cwd=project, capture_output=True, text=True, timeout=60,
                          check=True)
    return "ansible-playbook provisioning/site.yml" in done.stdout


def test_the_stamp_provisions_only_when_something_changed(tmp_path: Path):
    """`make check` skips the playbook when its inputs are unchanged since it last ran, and runs
    it again after any change: a playbook file, a pin, a venv that is gone."""
    project = tmp_path / "course"
    shutil.copytree(ROOT / "provisioning", project / "provisioning",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "instructor.mk", "requirements.txt", "constraints.txt", "pyproject.toml"):
        shutil.copy2(ROOT / name, project / name)
    stamp = [sys.executable, "provisioning/stamp.py", "write"]
    assert provisions(project, "check")  # no venv yet: never provisioned
    (project / ".venv").mkdir()
    subprocess.run([*stamp, "-e", "install_dev_tools=false"], cwd=project, check=True)
    assert not provisions(project, "check")
    assert provisions(project, "test")  # the labs' install lacks the course's own check tools
    subprocess.run(stamp, cwd=project, check=True)  # a full install covers the labs' one
    assert not provisions(project, "check") and not provisions(project, "test")
    with (project / "provisioning" / "site.yml").open("a") as playbook:
        playbook.write("# changed\n")
    assert provisions(project, "check")
    subprocess.run(stamp, cwd=project, check=True)
    (project / "constraints.txt").write_text("scapy==0.0\n")
    assert provisions(project, "check")
    subprocess.run(stamp, cwd=project, check=True)
    # Provisioned for another kernel (a box's root, built on this host for the box's own kernel):
    # this machine, which runs its own kernel, must provision again.
    subprocess.run([*stamp, "--kernel", "6.1.0-99-amd64"], cwd=project, check=True)
    assert provisions(project, "check")
    subprocess.run([*stamp, "--kernel", os.uname().release], cwd=project, check=True)
    assert not provisions(project, "check")
    shutil.rmtree(project / ".venv")
    assert provisions(project, "check")
