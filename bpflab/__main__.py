"""python -m bpflab: the course runtime's commands (doctor, lab, cleanup, release, starter, vm-smoke,
toolchain, dns-records)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bpflab.tools import SUITES


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["toolchain"]:  # its own options: bpflab/tools/toolchain.py
        from bpflab.tools.toolchain import main as toolchain

        return toolchain(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bpflab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("doctor", help="check this machine for what the labs need")
    lab = commands.add_parser("lab", help="serve the course folder with JupyterLab on 127.0.0.1")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--root", type=Path, help="serve this folder instead of the course folder")
    cleanup = commands.add_parser("cleanup", help="remove namespaces that killed runs left behind")
    cleanup.add_argument("--all", action="store_true",
                         help="also those of live runs (labs, graders, other users): an instructor's tool")
    release = commands.add_parser("release", help="build the student release")
    release.add_argument("dest", type=Path)
    starter = commands.add_parser("starter", help="print the starter of a lab's program")
    starter.add_argument("lab")
    smoke = commands.add_parser("vm-smoke", help="ping the XDP echo on a QEMU guest's virtio NIC")
    smoke.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    smoke.add_argument("--suite", choices=SUITES, default="bookworm",
                       help="the guest: Debian 12 (Linux 6.1) or Debian 13 (Linux 6.12)")
    commands.add_parser("toolchain", help="grade every reference with another Debian's toolchain "
                        "(python -m bpflab toolchain --help)")
    records = commands.add_parser("dns-records", help="list or change the DNS lab's records, live")
    records.add_argument("action", choices=("list", "load", "add", "del"))
    records.add_argument("name", nargs="?", help="a name in the zone (www, @, x.lab.example.)")
    records.add_argument("type", nargs="?", help="A or AAAA")
    records.add_argument("addresses", nargs="*", help="addresses to add, or the one to delete")
    records.add_argument("--file", type=Path, help="records file (default: labs/xdp-dns/records.yaml)")
    args = parser.parse_args(argv)

    if args.command == "doctor":
        from bpflab.tools.doctor import main as doctor

        return doctor()
    if args.command == "lab":
        from bpflab.tools.jupyter import serve

        return serve(args.port, args.root)
    if args.command == "cleanup":
        from bpflab import cgroups
        from bpflab.topology import cleanup_stale, command_of, live_runs

        live = live_runs()
        if args.all:
            for name, pid in live.items():
                print(f"removing {name}, of a run still alive: pid {pid}, {command_of(pid)}")
        removed = cleanup_stale(everything=args.all)
        print(f"removed {len(removed)} namespace(s)" + (f": {' '.join(removed)}" if removed else ""))
        groups = cgroups.cleanup_stale()  # sock_ops programs' cgroups of runs that are gone
        if groups:
            print(f"removed {len(groups)} cgroup(s): {' '.join(group.name for group in groups)}")
        if live and not args.all:
            pids = " ".join(map(str, sorted(set(live.values()))))
            print(f"kept {len(live)} of runs still alive (pids {pids}); `cleanup --all` removes those too")
        return 0
    if args.command == "release":
        from bpflab.course.release import build

        dest, kept = build(args.dest)
        print("\n".join([*kept, f"student release built in {dest}"]))
        return 0
    if args.command == "vm-smoke":
        from bpflab.tools.vm.smoke import main as vm_smoke

        return vm_smoke(args.accel, args.suite)
    if args.command == "dns-records":
        from bpflab.oracles.dns_records import DEFAULT_RECORDS
        from bpflab.services.dns_service import records_command

        return records_command(args.file or DEFAULT_RECORDS, args.action, args.name, args.type,
                               args.addresses)
    from bpflab.course.labs import load_lab
    from bpflab.course.starters import starter_source

    print(starter_source(load_lab(args.lab).reference.read_text()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
