"""Has this machine been provisioned with the playbook as it is now? (`make check` asks, every time.)

A stamp in the venv holds a digest of everything the playbook's outcome depends on: its own
files, the pinned requirements and the kernel release (the playbook installs that kernel's
headers), and which install it was: the full one, or the labs' own (`install_dev_tools=false`,
the one variable that narrows what is installed; a full install covers the labs'). The playbook
writes it as its last task, so the host, CI and the Vagrant VM leave the same stamp. `check`
compares it in a few milliseconds, so a student's check goes straight to the grader; any change
(a course update, a new kernel, a deleted venv) makes the next command provision again. It runs
on the system's python3 before the venv exists; where there is none yet, the check fails and
provisioning (which installs it) runs.

    python3 provisioning/stamp.py check [PLAYBOOK_VARS...]   exit 0 if provisioned as asked
    python3 provisioning/stamp.py write [--kernel RELEASE] [PLAYBOOK_VARS...]
                                        the playbook's last task; prints "written" when the stamp
                                        changed. RELEASE is the kernel it provisioned headers for:
                                        the running one, but for a root built into an image
                                        (`make box`), whose kernel is the image's own.
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
NARROWER = "install_dev_tools=false"  # the labs' install: no Vagrant, QEMU or Chromium


def digest(kernel: str = "") -> str:
    """The playbook's inputs on this machine: its files, pins and the kernel (by default the running one)."""
    hashed = hashlib.sha256((kernel or os.uname().release).encode())
    for name in INPUTS:
        path = ROOT / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and not any(part in str(file) for part in IGNORED):
                hashed.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return hashed.hexdigest()


def profile(variables: list[str]) -> str:
    """Which install the playbook's variables ask for: "labs" or "full"."""
    return "labs" if NARROWER in " ".join(variables) else "full"


def provisioned(wanted: str) -> bool:
    """True if the last run of the playbook, of the `wanted` install or a full one, had today's inputs."""
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("digest") == digest() and stamp.get("profile") in (wanted, "full")


def main(argv: list[str]) -> int:
    action, rest = (argv or ["help"])[0], argv[1:]
    kernel = ""
    if rest[:1] == ["--kernel"] and len(rest) > 1:
        kernel, rest = rest[1], rest[2:]
    wanted = profile(rest)
    if action == "check":
        return 0 if provisioned(wanted) else 1
    if action == "write":
        if not provisioned(wanted) or wanted == "full":  # a full stamp is never narrowed
            text = json.dumps({"digest": digest(kernel), "profile": wanted}) + "\n"
            if not STAMP.is_file() or STAMP.read_text() != text:
                STAMP.write_text(text)
                print("written")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
