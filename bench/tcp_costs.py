"""Figures of the tcp-state reference, printed (never asserted): run as root from the venv.

    .venv/bin/python bench/tcp_costs.py

1. ns per segment by BPF_PROG_TEST_RUN, each beside its hook's floor (an empty program, same
   frame), run inside the server's namespace where the socket lookups find the lab's sockets:
   - every packet program on an ACK of an open connection (a lookup that finds it; the frame
     is passed, so it is timed as the mean of many repeats);
   - the shield on a SYN to the listener (a cookie made, the SYN-ACK written: the frame changes,
     so one run per call, the interquartile mean of many calls, and the floor timed the same way).
2. A SYN flood of spoofed sources while real clients connect (TcpLab.flood_with_clients: the
   clients stop at the first that fails), with the shield and without it (SYN cookies off, as
   a server without a shield might run): SYNs sent, answered at XDP, clients connected, and
   what the listener dropped (nstat).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bpflab import measure
from bpflab.course.labs import load_lab
from bpflab.parts import Parts, load_parts
from bpflab.tcp_state import TcpLab, segment
from bpflab.topology import in_netns, sysctl

SINGLE_RUNS = 5000
FLOOD_SYNS = 5000
CLIENTS = 20
DROPS = ("TcpExtListenDrops", "TcpExtListenOverflows")


def costs(parts: Parts, net: TcpLab) -> None:
    syn = segment("S", sport=45000, seq=1)
    with in_netns(net.server_netns), net.connection(wanted=10) as client:
        ack = segment("A", sport=client.getsockname()[1], seq=1, ack=1)
        for entry in ("xdp_tcp_seen", "tc_tcp_flows", "xdp_flow_gate", "xdp_syn_shield"):
            program = parts[entry]
            cost, floor = measure.testrun_ns(program.fd, ack), measure.floor_ns(program.hook, ack)
            print(f"{entry:15} ACK of an open connection  {cost:6.0f} ns  floor {floor:4.0f}  "
                  f"above {cost - floor:4.0f}")
        shield = measure.single_run_ns(parts["xdp_syn_shield"].fd, syn, SINGLE_RUNS)
        floor = measure.single_run_floor_ns("xdp", syn, SINGLE_RUNS)
        print(f"{'xdp_syn_shield':15} SYN answered with a cookie {shield:6.0f} ns  floor {floor:4.0f}  "
              f"above {shield - floor:4.0f}")


def flood(parts: Parts, net: TcpLab, shielded: bool) -> None:
    shield = parts["xdp_syn_shield"]
    before, answered = net.settle(), shield.percpu_sums("shield").get(0, 0)
    result = net.flood_with_clients(FLOOD_SYNS, CLIENTS)
    after = net.settle()
    answered = shield.percpu_sums("shield").get(0, 0) - answered
    drops = ", ".join(f"{name} {after[name] - before[name]}" for name in DROPS)
    print(f"{'shield' if shielded else 'no shield, cookies off':24} SYNs sent {result.sent}, answered at XDP "
          f"{answered}, clients connected {result.connected}/{CLIENTS} in {result.seconds:.1f} s; {drops}")


def main() -> None:
    lab = load_lab("tcp-state")
    parts = load_parts(lab.reference, lab)
    try:
        with TcpLab(Path(tempfile.mkdtemp()) / "server.log", sockops=parts["sockops_flows"]) as net:
            with net.always_cookies():
                costs(parts, net)
                with net.attached(parts["xdp_syn_shield"]):
                    flood(parts, net, shielded=True)
            sysctl(net.server_netns, "net.ipv4.tcp_syncookies", 0)
            flood(parts, net, shielded=False)
    finally:
        parts.close()


if __name__ == "__main__":
    main()
