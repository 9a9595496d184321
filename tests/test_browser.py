"""The labs in a real browser: JupyterLab (as `make lab` starts it) in headless Chromium runs
the first lab's notebook, and the page shows pings answered by the XDP program."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest

from bpflab.course.labs import NOTEBOOKS_DIR, ROOT
from bpflab.tools.browser import run_notebook
from tests.test_jupyter import free_port, status

NOTEBOOK = "01-xdp-icmp.ipynb"
ANSWERED = "IPv4: 10 of 10 pings answered; the program counted 10"
DONE = "namespaces left behind: none"
SCREENSHOT = ROOT / "artifacts" / "browser" / "01-xdp-icmp.png"
RUN_SECONDS = 240


# JupyterLab settings for the test: every cell rendered (no windowing, so that all outputs are in
# the page), no autosave, and no news fetched from outside.
SETTINGS = {
    "notebook-extension/tracker": {"windowingMode": "none"},
    "docmanager-extension/plugin": {"autosave": False},
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab through `python -m bpflab lab`, serving a copy of the notebook."""
    for name, values in SETTINGS.items():
        path = tmp_path / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    notebooks = tmp_path / "notebooks"  # the browser may save what it ran: never into the checkout
    notebooks.mkdir()
    shutil.copy(NOTEBOOKS_DIR / NOTEBOOK, notebooks / NOTEBOOK)
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    argv = [sys.executable, "-m", "bpflab", "lab", "--port", str(port), "--root", str(notebooks)]
    wrapper = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while status(f"http://127.0.0.1:{port}/api/status?token={token}") != 200:
            assert time.monotonic() < deadline, "JupyterLab did not start"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token
    finally:
        wrapper.send_signal(signal.SIGTERM)  # stopped by its pid; it stops JupyterLab by its own
        wrapper.wait(60)


@pytest.mark.slow
def test_first_lab_notebook_runs_in_chromium(jupyterlab):
    base, token = jupyterlab
    outputs = run_notebook(f"{base}/lab/tree/{NOTEBOOK}?token={token}", DONE, SCREENSHOT, RUN_SECONDS,
                           shown=ANSWERED)
    assert ANSWERED in outputs
    assert "Traceback" not in outputs
