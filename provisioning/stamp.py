"""Has this machine been provisioned with the playbook as it is now? (`make check` asks, every time.)

A stamp in the venv holds a digest of everything the playbook's outcome depends on: its own
files, the pinned requirements, the kernel release (the playbook installs that kernel's
headers) and the playbook's variables. `check` compares it in a few milliseconds, so a student's
check goes straight to the grader; any change (a course update, a new kernel, a deleted venv)
makes the next command provision again. It runs on the system's python3 before the venv exists;
where there is none yet, the check fails and provisioning (which installs it) runs.

    python3 provisioning/stamp.py check [PLAYBOOK_VARS...]   exit 0 if provisioned as asked
    python3 provisioning/stamp.py write [PLAYBOOK_VARS...]   after a successful playbook run
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ROOT / ".venv" / "provisioned.json"
INPUTS = ("provisioning", "requirements.txt", "constraints.txt", "pyproject.toml")
IGNORED = ("__pycache__", ".retry")
FULL = ""  # the playbook's variables for a full install, which covers every narrower one


def digest() -> str:
    """The playbook's inputs on this machine: its files, pins and the running kernel."""
    hashed = hashlib.sha256(os.uname().release.encode())
    for name in INPUTS:
        path = ROOT / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and not any(part in str(file) for part in IGNORED):
                hashed.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return hashed.hexdigest()


def provisioned(variables: str) -> bool:
    """True if the last run of the playbook, with these variables or a full one, had today's inputs."""
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("digest") == digest() and stamp.get("variables") in (variables, FULL)


def main(argv: list[str]) -> int:
    action, variables = argv[0], " ".join(argv[1:]).strip()
    if action == "check":
        return 0 if provisioned(variables) else 1
    if action == "write":
        if not provisioned(variables) or variables == FULL:  # a full stamp is never narrowed
            STAMP.write_text(json.dumps({"digest": digest(), "variables": variables}) + "\n")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
