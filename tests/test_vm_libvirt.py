"""libvirt in a namespace of its own (bpflab.tools.vm.libvirt), for `make vm-vagrant`: its
networks never reach the host's, and nothing of it outlives a run, a killed one included."""

from __future__ import annotations

import subprocess
import sys
import time

from bpflab.processes import pid_alive
from bpflab.tools.vm.libvirt import NETNS, NetnsLibvirt, netns_exists, netns_pids

BRIDGE = "bpflabtest0"
NETWORK = f"""<network><name>bpflab-test</name><bridge name='{BRIDGE}'/>
<ip address='192.168.56.1' netmask='255.255.255.0'><dhcp><range start='192.168.56.100' end='192.168.56.150'/>
</dhcp></ip></network>"""


def still_running(pids: list[int], wait: float = 5.0) -> list[int]:
    """Those of `pids` still there after `wait` s: a process stopped by its pid whose parent is
    not ours (dnsmasq's is init) stays a zombie until that parent reaps it."""
    deadline = time.monotonic() + wait
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def on_host(link: str) -> bool:
    return subprocess.run(["ip", "link", "show", link], capture_output=True, check=False).returncode == 0


def test_libvirt_networks_live_in_the_namespace_and_go_with_it(tmp_path) -> None:
    (tmp_path / "network.xml").write_text(NETWORK)
    with NetnsLibvirt() as libvirt:
        assert "QEMU" in libvirt.virsh("version").stdout
        libvirt.virsh("net-create", str(tmp_path / "network.xml"))
        assert libvirt.run(["ip", "link", "show", BRIDGE]).returncode == 0  # inside
        assert not on_host(BRIDGE)  # and not on the host
        pids = netns_pids(NETNS)  # the daemons, and the network's dnsmasq
        assert len(pids) >= 3, pids
    assert not netns_exists(NETNS) and not on_host(BRIDGE)
    assert not still_running(pids)


KILLED_RUN = """
import time
from bpflab.tools.vm.libvirt import NetnsLibvirt
libvirt = NetnsLibvirt().__enter__()
libvirt.virsh("net-create", {xml!r})
print("ready", flush=True)
time.sleep(60)
"""


def test_a_killed_run_is_cleared_by_the_next(tmp_path) -> None:
    """kill -9 of the process that started libvirt: its daemons die with it, and the next run
    stops what is left in the namespace (the network's dnsmasq) and deletes it."""
    (tmp_path / "network.xml").write_text(NETWORK)
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(xml=str(tmp_path / "network.xml"))],
                           stdout=subprocess.PIPE, text=True)
    assert run.stdout.readline().strip() == "ready"
    run.kill()
    run.wait()
    time.sleep(0.5)
    assert netns_exists(NETNS)  # left behind
    left = netns_pids(NETNS)
    with NetnsLibvirt() as libvirt:
        assert "bpflab-test" not in libvirt.virsh("net-list", "--all", "--name").stdout
    assert not netns_exists(NETNS)
    assert not still_running(left)
