"""`make lab`: JupyterLab on 127.0.0.1 only, with a token, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from bpflab.course.labs import ROOT

STARTUP_SECONDS = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def status(url: str) -> int:
    """The HTTP status of a GET, or 0 while nothing listens yet."""
    try:
        with DIRECT.open(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, http.client.HTTPException):  # refused, reset or timed out while it starts
        return 0


@pytest.mark.slow
def test_jupyterlab_serves_on_loopback_with_a_token_and_stops_on_ctrl_c():
    port = free_port()
    wrapper = subprocess.Popen([sys.executable, "-m", "bpflab", "lab", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = wrapper.stdout.readline()
        while line and "token=" not in line:
            line = wrapper.stdout.readline()
        match = re.search(r"\(pid (\d+)\): (http://127\.0\.0\.1:\d+/lab\?token=(\w+))", line)
        assert match, line
        server_pid, token = int(match.group(1)), match.group(3)
        api = f"http://127.0.0.1:{port}/api/status"
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and status(f"{api}?token={token}") != 200:
            time.sleep(0.5)
        assert status(f"{api}?token={token}") == 200
        assert status(api) == 403, "the API must refuse requests without the token"
        ss = ["ss", "-Hltnp", f"sport = :{port}"]
        listening = subprocess.run(ss, capture_output=True, text=True, check=True).stdout
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
        assert addresses == {"127.0.0.1"}, listening
    finally:
        wrapper.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        wrapper.wait(60)
    assert not os.path.exists(f"/proc/{server_pid}"), "JupyterLab must be stopped by Ctrl-C"
