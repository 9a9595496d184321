"""The fleet playbook, with two inventory hosts that are both this machine: the sharded
grade, merged, equals the grade of one batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bpflab.course.labs import ROOT
from bpflab.course.starters import starter_source
from tests.hostile import LAB

ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "provisioning" / "ansible.cfg")}


def make_class(root: Path) -> None:
    reference = LAB.reference.read_text()
    texts = {"ann": reference, "ben": starter_source(reference),
             "cid": reference.replace("proto = ip->protocol;", "proto = ip->protocol")}
    for student, text in texts.items():
        (root / student).mkdir(parents=True)
        (root / student / LAB.program).write_text(text)
    (root / "dee").mkdir()  # handed in nothing


def test_sharded_grade_equals_single_batch(tmp_path):
    make_class(tmp_path / "class")
    single = subprocess.run([sys.executable, "-m", "grader", "batch", str(tmp_path / "class"), "--out",
                             str(tmp_path / "single"), "--labs", LAB.id], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, check=False)
    assert single.returncode == 0, single.stderr[-2000:]
    inventory = tmp_path / "fleet.ini"
    inventory.write_text("[graders]\n" + "".join(
        f"{host} ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n"
        for host in ("grader-a", "grader-b")))
    # Both hosts are this 2-core machine: one at a time (-f 1), or four graders (two batches of
    # --jobs 2) would share two cores, and their compile limits and ping tests with them.
    fleet = subprocess.run(["ansible-playbook", "-f", "1", "-i", str(inventory),
                            "provisioning/grade_fleet.yml", "-e", f"submissions={tmp_path / 'class'}",
                            "-e", f"results={tmp_path / 'fleet'}",
                            "-e", f"labs={LAB.id}", "-e", "provision=false"],
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900, check=False)
    assert fleet.returncode == 0, fleet.stdout[-4000:]
    assert sorted(p.name for p in (tmp_path / "fleet" / "shards").iterdir()) == ["0", "1"]
    merged = (tmp_path / "fleet" / "class" / "gradebook.csv").read_text()
    assert merged == (tmp_path / "single" / "gradebook.csv").read_text()
    assert "ann,10,10" in merged and "dee,0,0" in merged
    assert not any(Path("/var/tmp/bpflab-fleet").glob("grader-*"))
