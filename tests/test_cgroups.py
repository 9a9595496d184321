"""Programs attached to a cgroup (sock_ops, for lab tcp-state): real TCP connections between the
test's own namespaces, a server started inside the cgroup or outside it, and nothing left."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import time

from bpflab.cgroups import ProgramCgroup, cleanup_stale, v2_root
from bpflab.processes import pid_namespace
from bpflab.programs import load_text
from bpflab.services.netns_server import NetnsServer
from bpflab.topology import Topology, run_in

COUNTER = r"""
#include <uapi/linux/bpf.h>

BPF_ARRAY(accepted, __u64, 1);  /* connections the cgroup's servers accepted */

int count_accepted(struct bpf_sock_ops *skops)
{
	__u32 key = 0;
	__u64 *count;

	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	count = accepted.lookup(&key);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 1;
}
"""
PORT = 8080
SERVER = f"""
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", {PORT}))
server.listen()
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""
CLIENT = f"""
import socket, sys
for _ in range(int(sys.argv[2])):
    socket.create_connection((sys.argv[1], {PORT}), timeout=5).close()
"""


def accepted(program) -> int:
    return program.table("accepted")[ctypes.c_int(0)].value


def connect(topo: Topology, times: int) -> None:
    done = run_in(topo.client.netns, [sys.executable, "-c", CLIENT, topo.server.ipv4, str(times)])
    assert done.returncode == 0, done.stderr


def test_a_sock_ops_program_sees_only_the_connections_of_its_cgroups_servers(tmp_path) -> None:
    """Three connections to a server started in the cgroup are seen; two to the same server
    started outside it are not; the cgroup is gone afterwards."""
    program = load_text(COUNTER, "count_accepted", "sock_ops")
    try:
        with Topology() as topo, ProgramCgroup() as group:
            group.attach(program)
            with NetnsServer(topo.server.netns, [sys.executable, "-c", SERVER], tmp_path / "outside.log",
                             "listening"):
                connect(topo, 2)
            assert accepted(program) == 0
            with NetnsServer(topo.server.netns, [sys.executable, "-c", SERVER], tmp_path / "inside.log",
                             "listening", cgroup=group):
                connect(topo, 3)
            deadline = time.monotonic() + 5
            while accepted(program) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert accepted(program) == 3
            path = group.path
        assert not path.exists()
    finally:
        program.close()


def test_the_cgroup_of_a_run_that_is_gone_is_removed_and_a_live_ones_kept() -> None:
    """A killed run leaves its cgroup (and any program attached): the next one removes it."""
    child = subprocess.Popen(["true"])
    child.wait()
    gone = child.pid
    stale = v2_root() / f"bpflab-sockops-{pid_namespace()}-{gone}-0"
    stale.mkdir()
    with ProgramCgroup() as live:
        assert not stale.exists()
        assert cleanup_stale() == [] and live.path.exists()
