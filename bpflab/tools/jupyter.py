"""`make lab`: JupyterLab on the course folder, on 127.0.0.1 only, with a token.

It serves the whole folder, not only notebooks/: a student opens the notebooks and also edits the
lab's file (labs/<lab>/<program>.c) and reads its handout in the same browser tab, which is the
only way in on the Vagrant VM.

JupyterLab runs as a child in its own session, so that Ctrl-C reaches only this wrapper,
which stops the server by its process id, waits for it, and then removes any namespace that a
notebook kernel killed on the way left behind.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from bpflab.course.labs import ROOT
from bpflab.processes import sigterm_as_interrupt, stop
from bpflab.topology import cleanup_stale

STOP_GRACE_SECONDS = 15


def command(port: int, root: Path) -> list[str]:
    return [
        sys.executable, "-m", "jupyterlab",
        "--ServerApp.ip=127.0.0.1",  # never reachable from another machine
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # that port or none: a caller waits on it
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--allow-root",  # BPF needs root, and so do the kernels that load programs
    ]


def serve(port: int = 8888, root: Path | None = None) -> int:
    # The token goes through the environment, not the command line, which `ps` shows to all.
    # A JUPYTER_TOKEN already set (the Vagrant VM sets one) is used as it is.
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JUPYTER_TOKEN": token}
    server = subprocess.Popen(command(port, root or ROOT), env=env, start_new_session=True)
    print(f"\nJupyterLab (pid {server.pid}): http://127.0.0.1:{port}/lab?token={token}\n"
          "Ctrl-C stops it and cleans up.\n", flush=True)
    try:
        with sigterm_as_interrupt():
            return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(server, STOP_GRACE_SECONDS)
        removed = cleanup_stale()
        print(f"JupyterLab stopped; removed {len(removed)} namespace(s) left by notebooks.")
