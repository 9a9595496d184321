"""The project's own recipe and code quality: the playbook, the Makefile, ruff."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bpflab.labs import ROOT

ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "provisioning" / "ansible.cfg")}


def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_make_help_lists_the_commands():
    shown = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("lab", "test", "doctor", "grade", "check", "release", "clean"):
        assert f"make {target} " in shown


@pytest.mark.slow
def test_second_provisioning_changes_nothing():
    """`make test` has just provisioned; running the playbook again must report changed=0."""
    done = subprocess.run(["ansible-playbook", "provisioning/site.yml"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    recap = re.search(r"changed=(\d+).*failed=(\d+)", done.stdout)
    assert recap and recap.groups() == ("0", "0"), done.stdout[-3000:]


def test_ansible_lint_is_clean():
    lint = [sys.executable, "-m", "ansiblelint", "--nocolor", "provisioning/site.yml"]
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
