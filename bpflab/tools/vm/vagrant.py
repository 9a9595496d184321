"""`make vm-vagrant`: the self-learners' one command, `vagrant up`, run and checked end to end.

Everything happens in a network namespace of the check's own (bpflab/tools/vm/libvirt.py): the
libvirt daemons, the VMs' bridges, dnsmasq, Vagrant itself, its SSH port forward and the
browser. The host's networks are never touched, and the VMs reach nothing but each other and
that namespace, so the course box (`make box`) must hold all they need. Vagrant runs where a
self-learner runs it, in a fresh student release, with a VAGRANT_HOME of the run's own (the box
is added there): this checkout and the machine's own Vagrant state are left as they were.

What it checks, from outside the VMs and through Vagrant only:
- `vagrant up` of both VMs from the course box, KVM or QEMU's emulation (said which);
- the playbook's run at `vagrant up` changes nothing (the box was provisioned by it);
- in the lab VM, `make check LAB=...` grades each lab's reference, copied in, to full marks;
- the XDP echo attached to the 4-queue virtio NIC runs in native mode, with no "locked tx mode",
  and answers the client VM's pings with the lab VM's own echo off;
- JupyterLab answers on the forwarded 127.0.0.1:8888 with the token `vagrant up` printed, and
  headless Chromium runs notebook 00 there;
- `vagrant destroy -f`, then no domain, network, volume or pool of the run is left.

Its log, timings and screenshot go to bench/vm-vagrant/ (run.log, run.json, notebook-00.png),
committed after a run as labs/measure/ keeps the bench's figures: the check takes too long
under emulation to run in CI, so the last run's record is what the README's figures come from.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bpflab.course.labs import ROOT, all_labs, load_lab
from bpflab.processes import die_with_parent
from bpflab.tools.vm import box
from bpflab.tools.vm.libvirt import NETNS, LibvirtError, NetnsLibvirt

WORK = Path("/var/cache/bpflab/vagrant")  # the run's VAGRANT_HOME and checkout copy
RESULTS = ROOT / "bench" / "vm-vagrant"  # tracked: the last run's record, committed after a run
LAB_IP, CLIENT_IP = "192.168.56.10", "192.168.56.11"  # as in the Vagrantfile
JUPYTER = "http://127.0.0.1:8888"
UP_SECONDS = 3600  # both VMs under emulation, provisioning included
GRADE_SECONDS = 1800  # one lab's `make check` in the lab VM, under emulation
KVM_PROBE_SECONDS = 20  # a kernel under KVM prints its banner within a second; nested KVM can hang
ECHO = load_lab("xdp-icmp")  # its reference is the echo on the lab VM's NIC
NOTEBOOK = "00-hello-xdp.ipynb"
NOTEBOOK_DONE = "namespaces left behind: none"
# Run in the lab VM by the system's python with the course's venv: the XDP echo attached in native
# mode to eth1, the kernel's own echo off, until its stdin closes.
ECHO_IN_VM = """
import sys, subprocess, pathlib
from pyroute2 import IPRoute
from bpflab.programs import load
from bpflab.oracles.echo import configure
sysctl = pathlib.Path("/proc/sys/net/ipv4/icmp_echo_ignore_all")
old = sysctl.read_text()
mac = pathlib.Path("/sys/class/net/eth1/address").read_text().strip()
program = load(pathlib.Path("%(program)s"), "%(entry)s", "xdp")
configure(program, "%(ip)s", "fd00::10", mac)
with IPRoute() as ip:
    index = ip.link_lookup(ifname="eth1")[0]
    ip.link("set", index=index, xdp_fd=program.fd, xdp_flags=4)  # XDP_FLAGS_DRV_MODE: native or fail
    try:
        sysctl.write_text("1")
        print(subprocess.run(["ip", "-d", "link", "show", "eth1"], capture_output=True, text=True).stdout)
        print(subprocess.run(["ethtool", "-l", "eth1"], capture_output=True, text=True).stdout)
        print("READY", flush=True)
        sys.stdin.read()
        print("replies counted by the program:", program.percpu_sums("replies"))
    finally:
        sysctl.write_text(old)
        ip.link("set", index=index, xdp_fd=-1, xdp_flags=4)
print(subprocess.run(["dmesg"], capture_output=True, text=True).stdout[-4000:])
"""


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Report:
    """The checks' verdicts, and the whole output of what they ran, written to `log` as it comes
    (`tail -f` it: `vagrant up` under emulation takes minutes)."""

    log: Path
    accel: str = ""
    steps: list[Step] = field(default_factory=list)

    def record(self, name: str, ok: bool, started: float, detail: str = "") -> bool:
        step = Step(name, ok, round(time.monotonic() - started, 1), detail)
        self.steps.append(step)
        print(f"vm-vagrant: [{'PASS' if ok else 'FAIL'}] {name} ({step.seconds:.0f} s)"
              + (f": {detail}" if detail else ""), flush=True)
        return ok

    def output(self, title: str, text: str) -> str:
        with open(self.log, "a") as log:
            log.write(f"\n===== {title}\n{text}")
        return text

    def run(self, title: str, argv: list[str], timeout: float, **options) -> subprocess.CompletedProcess:
        """Run `argv`, its output going to the log as it comes; the output is also returned."""
        with open(self.log, "a") as log:
            log.write(f"\n===== {title}\n")
            log.flush()
            start = log.tell()
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False, **options)
        with open(self.log) as log:
            log.seek(start)
            done.stdout, done.stderr = log.read(), ""
        return done


def kvm_works(kernel: Path) -> bool:
    """Does a kernel boot under KVM here? (/dev/kvm can be there and hang: nested virtualization.)"""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-nographic", "-no-reboot",
            "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    deadline, seen = time.monotonic() + KVM_PROBE_SECONDS, b""
    os.set_blocking(process.stdout.fileno(), False)
    while time.monotonic() < deadline and b"Linux version" not in seen and process.poll() is None:
        time.sleep(0.2)
        seen += process.stdout.read() or b""
    process.kill()
    process.wait()
    return b"Linux version" in seen


def student_release(dest: Path) -> None:
    """What a self-learner runs `vagrant up` in: the student release (README, Quick start)."""
    done = subprocess.run([sys.executable, "-m", "bpflab", "release", str(dest)], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise LibvirtError(f"the student release could not be built: {done.stderr.strip()[-500:]}")


class Vagrant:
    """`vagrant` in the namespace, on the run's checkout copy and VAGRANT_HOME."""

    def __init__(self, libvirt: NetnsLibvirt, project: Path, home: Path, accel: str, report: Report):
        self.libvirt, self.project, self.report = libvirt, project, report
        self.env = {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_DEFAULT_PROVIDER": "libvirt",
                    "VAGRANT_CHECKPOINT_DISABLE": "1", "BPFLAB_ACCEL": accel}

    def __call__(self, *args: str, timeout: float = 600, title: str = "") -> subprocess.CompletedProcess:
        title = title or "vagrant " + " ".join(args)
        argv = ["ip", "netns", "exec", NETNS, "vagrant", *args]
        return self.report.run(title, argv, timeout, cwd=self.project, env=self.env)

    def ssh(self, machine: str, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return self("ssh", machine, "-c", command, timeout=timeout, title=f"{machine}$ {command}")


def libvirt_storage(libvirt: NetnsLibvirt) -> tuple[set[str], set[str]]:
    """(pools, volume paths) that libvirt knows of."""
    pools = set(libvirt.virsh("pool-list", "--all", "--name", check=False).stdout.split())
    volumes = set()
    for pool in pools:
        listed = libvirt.virsh("vol-list", pool, check=False).stdout.splitlines()[2:]
        volumes |= {line.split()[-1] for line in listed if line.strip()}
    return pools, volumes


def remove_new_storage(libvirt: NetnsLibvirt, before: tuple[set[str], set[str]]) -> None:
    """The box's volume and the pool vagrant-libvirt made: not undone by `vagrant destroy`."""
    pools, volumes = libvirt_storage(libvirt)
    for path in volumes - before[1]:
        libvirt.virsh("vol-delete", path, check=False)
    for pool in pools - before[0]:
        libvirt.virsh("pool-destroy", pool, check=False)
        libvirt.virsh("pool-undefine", pool, check=False)


def check_up(vagrant: Vagrant, report: Report) -> str:
    """`vagrant up` of both VMs; the JupyterLab URL it printed ("" if it failed)."""
    started = time.monotonic()
    up = vagrant("up", timeout=UP_SECONDS)
    recap = re.findall(r"ok=\d+\s+changed=(\d+)", up.stdout)
    report.record("vagrant up, both VMs", up.returncode == 0, started,
                  f"{report.accel}; exit {up.returncode}" + ("" if up.returncode == 0 else
                                                             ": " + up.stdout.strip().splitlines()[-1]))
    report.record("the playbook's run at vagrant up changes nothing", recap == ["0"], started,
                  f"changed={','.join(recap) or '(no recap)'}")
    url = re.search(r"JupyterLab: (http://127\.0\.0\.1:8888/lab\?token=\w+)", up.stdout)
    return url.group(1) if url else ""


def upload(vagrant: Vagrant, reference: Path, lab: str) -> None:
    """A lab's reference into the lab VM, where the student's file of that lab is."""
    vagrant("upload", str(reference), f"/vagrant/labs/{lab}/{reference.name}", "lab", timeout=300)


def check_labs(vagrant: Vagrant, report: Report, labs: list[str]) -> None:
    for lab in all_labs():
        if lab.id not in labs:
            continue
        started = time.monotonic()
        upload(vagrant, lab.reference, lab.id)
        done = vagrant.ssh("lab", f"cd /vagrant && sudo make check LAB={lab.id}", timeout=GRADE_SECONDS)
        score = re.search(r"^Score: ([\d.]+)/([\d.]+)$", done.stdout, re.MULTILINE)
        full = bool(score) and float(score.group(1)) == float(score.group(2)) > 0
        report.record(f"make check LAB={lab.id} in the lab VM", full, started,
                      score.group(0) if score else f"no score (exit {done.returncode})")


def check_native_echo(vagrant: Vagrant, report: Report) -> None:
    """The echo in native mode on eth1, answering the client VM's pings."""
    started = time.monotonic()
    upload(vagrant, ECHO.reference, ECHO.id)
    script = ECHO_IN_VM % {"ip": LAB_IP, "program": f"/vagrant/labs/{ECHO.id}/{ECHO.program}",
                           "entry": ECHO.entry}
    argv = ["ip", "netns", "exec", NETNS, "vagrant", "ssh", "lab", "-c",
            "sudo /vagrant/.venv/bin/python -c " + shlex.quote(script)]
    echo = subprocess.Popen(argv, cwd=vagrant.project, env=vagrant.env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=die_with_parent)
    shown: list[str] = []
    deadline = time.monotonic() + 600
    for line in echo.stdout:
        shown.append(line)
        if line.strip() == "READY" or time.monotonic() > deadline:
            break
    link = "".join(shown)
    native = bool(re.search(r"\bxdp\b.*\bprog/xdp id \d+", link, re.DOTALL)) and "xdpgeneric" not in link
    queues = re.search(r"Current hardware settings:.*?Combined:\s+(\d+)", link, re.DOTALL)
    ping = vagrant.ssh("client", f"ping -c 5 -W 2 {LAB_IP}", timeout=300)
    echo.stdin.close()
    rest = echo.stdout.read()
    echo.wait(120)
    report.output("lab$ XDP echo on eth1", link + rest)
    answered = re.search(r"(\d+) received", ping.stdout)
    report.record("native XDP on the virtio NIC (ip -d link)", native and "READY" in link, started,
                  f"{queues.group(1) if queues else '?'} combined channels in use")
    report.record("no \"locked tx mode\" in the lab VM's kernel log", "locked tx mode" not in rest, started)
    report.record("the client VM's pings answered by the XDP echo, kernel echo off",
                  bool(answered) and int(answered.group(1)) == 5, started,
                  f"{answered.group(1) if answered else 0} of 5")


def check_browser(vagrant: Vagrant, url: str, report: Report) -> None:
    """Chromium, in the namespace where the port forward listens, runs notebook 00."""
    started = time.monotonic()
    if not url:
        report.record("JupyterLab on the forwarded port runs notebook 00", False, started,
                      "vagrant up printed no JupyterLab URL")
        return
    # The release's notebooks leave the student's cells empty (notebook 00's read_counts): Run All
    # stops there. Like each lab's reference, the solved notebook is uploaded first.
    solved = str(ROOT / "notebooks" / NOTEBOOK)
    vagrant("upload", solved, f"/vagrant/notebooks/{NOTEBOOK}", "lab", timeout=300)
    token = url.split("token=")[1]
    screenshot = RESULTS / "notebook-00.png"
    argv = ["ip", "netns", "exec", NETNS, sys.executable, "-m", "bpflab.tools.vm.vagrant", "--browse",
            f"{JUPYTER}/lab/tree/notebooks/{NOTEBOOK}?token={token}", str(screenshot)]
    done = report.run("browser", argv, 1200, cwd=ROOT)
    ok = done.returncode == 0 and "Traceback" not in done.stdout
    report.record("JupyterLab on the forwarded 127.0.0.1:8888 runs notebook 00 in Chromium", ok, started,
                  f"screenshot {screenshot.relative_to(ROOT)}")


def browse(url: str, screenshot: Path) -> int:
    """(Inside the namespace) run the notebook at `url` in Chromium; print its outputs."""
    from bpflab.tools.browser import run_notebook

    print(run_notebook(url, NOTEBOOK_DONE, screenshot, 900, shown=NOTEBOOK_DONE))
    return 0


def check_nothing_left(libvirt: NetnsLibvirt, vagrant: Vagrant, report: Report,
                       before: tuple[set[str], set[str]]) -> None:
    started = time.monotonic()
    destroyed = vagrant("destroy", "-f", timeout=600)
    remove_new_storage(libvirt, before)
    domains = libvirt.virsh("list", "--all", "--name", check=False).stdout.split()
    networks = libvirt.virsh("net-list", "--all", "--name", check=False).stdout.split()
    after = libvirt_storage(libvirt)
    left = [*domains, *networks, *(after[0] - before[0]), *(after[1] - before[1])]
    report.record("vagrant destroy -f leaves no domain, network, volume or pool",
                  destroyed.returncode == 0 and not left, started, ", ".join(left) or "none left")


def run(box_file: Path, accel: str, labs: list[str]) -> Report:
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = Report(RESULTS / "run.log")
    report.log.write_text("")
    print(f"vm-vagrant: what it runs, as it runs: {report.log}", flush=True)
    started = time.monotonic()
    if not box.is_current(box_file):
        print("vm-vagrant: building the box first (absent, older than the playbook's inputs, or a day old)")
        box.build(box_file)
        report.record("make box", True, started, f"{box_file.stat().st_size >> 20} MiB")
    run_dir = WORK / f"run-{os.getpid()}"
    shutil.rmtree(WORK, ignore_errors=True)  # a killed run's
    project, home = run_dir / "course", run_dir / "vagrant.d"
    student_release(project)
    kernel = next((box.CACHE).glob("base-*/boot/vmlinuz-*"), None)
    if accel == "auto":
        accel = "kvm" if kernel and kvm_works(kernel) else "tcg"
    report.accel = {"kvm": "KVM", "tcg": "QEMU's emulation (TCG): /dev/kvm absent or hanging"}[accel]
    print(f"vm-vagrant: VMs under {report.accel}", flush=True)
    try:
        with NetnsLibvirt() as libvirt:
            before = libvirt_storage(libvirt)
            vagrant = Vagrant(libvirt, project, home, accel, report)
            started = time.monotonic()
            added = vagrant("box", "add", "--name", box.BOX_NAME, str(box_file), timeout=900)
            if report.record("vagrant box add", added.returncode == 0, started):
                try:
                    url = check_up(vagrant, report)
                    check_labs(vagrant, report, labs)
                    check_native_echo(vagrant, report)
                    check_browser(vagrant, url, report)
                finally:
                    check_nothing_left(libvirt, vagrant, report, before)
    except LibvirtError as err:
        report.record("libvirt in its namespace", False, started, str(err))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpflab.tools.vm.vagrant",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=Path, default=box.OUTPUT, help="the course box (built if absent)")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--labs", nargs="*", help="labs to grade in the VM (default: all)")
    parser.add_argument("--browse", nargs=2, metavar=("URL", "SCREENSHOT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.browse:
        return browse(args.browse[0], Path(args.browse[1]))
    labs = [lab.id for lab in all_labs()] if args.labs is None else args.labs
    started = time.monotonic()
    report = run(args.box, args.accel, labs)
    total = time.monotonic() - started
    (RESULTS / "run.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "accel": report.accel, "total_seconds": round(total),
         "steps": [asdict(step) for step in report.steps]}, indent=1) + "\n")
    failed = [step.name for step in report.steps if not step.ok]
    print(f"vm-vagrant: {len(report.steps) - len(failed)} of {len(report.steps)} checks passed "
          f"in {total / 60:.1f} min; log and timings in {RESULTS.relative_to(ROOT)}/", flush=True)
    if failed:
        print("FAIL: " + "; ".join(failed), flush=True)
        return 1
    print("PASS: vagrant up works end to end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
