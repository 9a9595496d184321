"""The vm-smoke guest's loader: BPF instructions in, verdicts, a cgroup's sock_ops and a natively
attached XDP echo out.

The guest has neither BCC nor the course's runtime, so the host compiled the programs with BCC
and sends their instructions and a description of their maps, as one line of JSON, through the
virtio-serial port PORT (see bpflab/tools/vm/qemu.py). For each program this loader makes its
maps, once per object (the file BCC compiled: its programs share its maps, as tcp-state's parts
share `flow_states`), writes their fds into the instructions that refer to them and lets this
guest kernel's verifier check it, printing accepted or rejected with the end of the verifier's log.
Each sock_ops program is attached to a cgroup v2 of its own (smoke-init mounts the tree), and a
child process in that cgroup makes one TCP connection over loopback, so that the program runs:
the loader reports how many entries its hash maps then hold. The echo (`attach`) is then attached
in driver mode with its `server` map filled. It reports the link and the kernel log, and prints
the reply counters whenever they change. Lines for the host start with "VMSMOKE".

It runs on Debian's python3 with the standard library only: ctypes on Debian's libbpf1.
"""

from __future__ import annotations

import base64
import ctypes
import glob
import json
import os
import socket
import struct
import subprocess
import sys
import time

PORT = "bpflab.programs"
XDP_FLAGS_DRV_MODE = 1 << 2
BPF_PSEUDO_MAP_FD = 1
BPF_PROG_TYPE_SOCK_OPS = 13
BPF_CGROUP_SOCK_OPS = 3  # enum bpf_attach_type
HASH_MAPS = {1, 5, 9}  # enum bpf_map_type: hash, per-CPU hash, LRU hash: maps whose entries count
CGROUP_ROOT = "/sys/fs/cgroup"  # smoke-init mounts cgroup2 there
CONNECT_SECONDS = 10  # the loopback connection that makes a sock_ops program run
INSN = struct.Struct("<BBhi")  # struct bpf_insn: code, dst_reg:4 src_reg:4, off, imm
LOG_SIZE = 1 << 22
LOG_LINES = 15  # the end of a rejecting verifier's log: its verdict and the instructions before it

libbpf = ctypes.CDLL("libbpf.so.1", use_errno=True)
libbpf.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                                  ctypes.c_uint32, ctypes.c_void_p]
libbpf.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                 ctypes.c_size_t, ctypes.c_void_p]
libbpf.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
libbpf.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libbpf.bpf_map_get_next_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libbpf.bpf_xdp_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]
libbpf.bpf_prog_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint]


class ProgLoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts of libbpf 1.1 (bpf/bpf.h), for the verifier's log."""

    _fields_ = [
        ("sz", ctypes.c_size_t), ("attempts", ctypes.c_int), ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32), ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32), ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32), ("fd_array", ctypes.c_void_p),
        ("func_info", ctypes.c_void_p), ("func_info_cnt", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_void_p),
        ("line_info_cnt", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
        ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32), ("log_buf", ctypes.c_void_p),
    ]


def say(*words: object) -> None:
    print("VMSMOKE", *words, flush=True)


def fail(why: str) -> None:
    say("failed:", why)
    sys.exit(1)


def receive(seconds: float = 180) -> list[dict]:
    """The programs, from the virtio-serial port named PORT (its name comes from the host)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in glob.glob("/sys/class/virtio-ports/*/name"):
            with open(name) as f:
                if f.read().strip() == PORT:
                    return json.loads(first_line(f"/dev/{name.split('/')[-2]}", deadline))
        time.sleep(0.1)
    fail(f"no virtio-serial port {PORT}")
    return []


def first_line(device: str, deadline: float) -> bytes:
    """The first line written into the port. Until the host connects to its end, a read finds
    the port closed and returns nothing: try again until the deadline (the host may still be
    compiling when the guest gets here)."""
    while time.monotonic() < deadline:
        with open(device, "rb") as port:
            line = port.readline()
        if line.strip():
            return line
        time.sleep(0.2)
    fail("the host sent no programs")
    return b""


def create_maps(program: dict, made: dict[tuple[str, int], int]) -> dict[str, int]:
    """The program's maps as the host's kernel described them, by name: made here the first time
    a program of its object uses one, and the same fd for the next (`made`, by object and host
    id), so that what one part writes another reads, as on the host."""
    fds = {}
    for m in program["maps"]:
        key = (program["object"], m["id"])
        if key not in made:
            fd = libbpf.bpf_map_create(m["type"], m["name"].encode(), m["key_size"], m["value_size"],
                                       m["max_entries"], None)
            if fd < 0:
                fail(f"cannot create map {m['name']}: errno {-fd}")
            made[key] = fd
        fds[m["name"]] = made[key]
    return fds


def patch(insns: bytes, maps: list[dict], fds: dict[str, int]) -> bytes:
    """Write this guest's map fds into the ld_imm64 instructions that load a map."""
    code = bytearray(insns)
    for m in maps:
        for index in m["insns"]:
            op, regs, off, _ = INSN.unpack_from(code, index * INSN.size)
            if op != 0x18 or regs >> 4 != BPF_PSEUDO_MAP_FD:
                fail(f"instruction {index} does not load map {m['name']}")
            INSN.pack_into(code, index * INSN.size, op, regs, off, fds[m["name"]])
    return bytes(code)


def load(program: dict, made: dict[tuple[str, int], int]) -> tuple[int, dict[str, int]]:
    """Make the program's maps (or reuse its object's, `made`) and load it: (program fd or -1 if
    rejected, map fds by name).

    Says `verifier <name>: accepted` or `rejected`, then, for a rejection, the end of the log.
    """
    fds = create_maps(program, made)
    insns = patch(base64.b64decode(program["insns"]), program["maps"], fds)
    count, started = len(insns) // INSN.size, time.monotonic()
    name, license_ = program["name"].encode()[:15], program["license"].encode()
    fd = libbpf.bpf_prog_load(program["prog_type"], name, license_, insns, count, None)
    seconds = time.monotonic() - started
    if fd >= 0:
        say(f"verifier {program['name']}: accepted ({count} instructions, {seconds:.2f} s)")
        return fd, fds
    say(f"verifier {program['name']}: rejected (errno {-fd}, {count} instructions, {seconds:.2f} s)")
    log = ctypes.create_string_buffer(LOG_SIZE)
    opts = ProgLoadOpts(sz=ctypes.sizeof(ProgLoadOpts), log_level=1, log_size=LOG_SIZE,
                        log_buf=ctypes.addressof(log))
    libbpf.bpf_prog_load(program["prog_type"], name, license_, insns, count, ctypes.byref(opts))
    for line in log.value.decode(errors="replace").splitlines()[-LOG_LINES:]:
        say(f"verifier {program['name']}: | {line}")
    return -1, fds


def fill(fd: int, key: int, value: bytes) -> None:
    k = ctypes.c_uint32(key)
    if libbpf.bpf_map_update_elem(fd, ctypes.byref(k), value, 0) != 0:
        fail("cannot fill the server map")


def percpu_sum(fd: int, key: int, value_size: int) -> int:
    """A per-CPU array's u64 value at `key`, summed over the possible CPUs."""
    cpus = libbpf.libbpf_num_possible_cpus()
    stride = (value_size + 7) // 8 * 8
    buf = ctypes.create_string_buffer(stride * cpus)
    k = ctypes.c_uint32(key)
    if libbpf.bpf_map_lookup_elem(fd, ctypes.byref(k), buf) != 0:
        return -1
    return sum(struct.unpack_from("<Q", buf.raw, cpu * stride)[0] for cpu in range(cpus))


def report(ifname: str) -> None:
    """What the host checks: the link as `ip -d link` shows it, and the kernel's log about XDP."""
    link = subprocess.run(["ip", "-d", "link", "show", "dev", ifname], capture_output=True, text=True)
    for line in link.stdout.splitlines():
        say("link:", line.strip())
    kmsg = subprocess.run(["dmesg"], capture_output=True, text=True)
    for line in kmsg.stdout.splitlines():
        if "xdp" in line.lower() or "virtio_net" in line:
            say("kmsg:", line)


def watch(fd: int, value_size: int) -> None:
    """Print the reply counters (ICMPv4, ICMPv6) whenever they change; runs until powered off."""
    last = None
    while True:
        counts = (percpu_sum(fd, 0, value_size), percpu_sum(fd, 1, value_size))
        if counts != last:
            say(f"replies ipv4 {counts[0]} ipv6 {counts[1]}")
            last = counts
        time.sleep(0.3)


def report_shared(loaded: list[tuple[dict, int, dict[str, int]]]) -> None:
    """Say which maps several programs of one object use, and the one fd written into all of
    them: that the parts of a file share its maps here as on the host."""
    users: dict[tuple[str, str, int], list[str]] = {}
    for program, _, fds in loaded:
        for name, fd in fds.items():
            users.setdefault((program["object"], name, fd), []).append(program["name"])
    for (obj, name, fd), names in users.items():
        if len(names) > 1:
            say(f"shared map {name} of {obj}: fd {fd} in {', '.join(names)}")


def attach_cgroup(program: dict, prog_fd: int) -> str | None:
    """Attach a sock_ops program to a new cgroup v2 of its own (BPF_CGROUP_SOCK_OPS); its path,
    or None when refused. It stays attached until the guest powers off: nothing else joins it."""
    name, path = program["name"], f"{CGROUP_ROOT}/vmsmoke-{program['name']}"
    if prog_fd < 0:
        say(f"attach {name}: cgroup not tried, the verifier rejected it")
        return None
    try:
        os.mkdir(path)  # fails where smoke-init could not mount cgroup2: sysfs is not writable
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        say(f"attach {name}: cgroup refused: {path}: {err.strerror}")
        return None
    err = libbpf.bpf_prog_attach(prog_fd, fd, BPF_CGROUP_SOCK_OPS, 0)
    os.close(fd)  # the attachment belongs to the cgroup, not to this fd
    if err:
        say(f"attach {name}: cgroup refused: errno {-err}")
        return None
    say(f"attach {name}: cgroup ok ({path}, BPF_CGROUP_SOCK_OPS)")
    return path


def exchange() -> None:
    """One TCP connection over loopback: listen on 127.0.0.1, connect, accept, a few bytes each way,
    then both ends closed (a sock_ops program that asked for state callbacks sees the close)."""
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.create_connection(listener.getsockname(), timeout=CONNECT_SECONDS) as client:
        server, _ = listener.accept()
        with server:
            server.settimeout(CONNECT_SECONDS)  # a stuck child would leave the host waiting for ready
            client.sendall(b"vmsmoke")
            server.recv(16)
            server.sendall(b"ok")
            client.recv(16)


def connect_from(cgroup: str, name: str) -> bool:
    """`exchange()` in a child process that joined `cgroup`: a socket belongs to the cgroup of the
    process that made it, so the loader itself stays out. True if the child finished it."""
    pid = os.fork()
    if pid == 0:
        try:
            with open(f"{cgroup}/cgroup.procs", "w") as procs:
                procs.write(str(os.getpid()))
            exchange()
        except BaseException as err:  # the child must never return into the loader's code
            say(f"ran {name}: the loopback connection failed: {err!r}")
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def entries(fd: int, m: dict) -> int:
    """How many keys the hash map `m` holds (bpf_map_get_next_key, from no key to the last)."""
    key, following = ctypes.create_string_buffer(m["key_size"]), ctypes.create_string_buffer(m["key_size"])
    count, previous = 0, None
    while count < m["max_entries"] and libbpf.bpf_map_get_next_key(fd, previous, following) == 0:
        count += 1
        ctypes.memmove(key, following, m["key_size"])
        previous = key
    return count


def run_sock_ops(program: dict, prog_fd: int, fds: dict[str, int]) -> None:
    """Attach a sock_ops program to its cgroup and make it run: say how many entries each of its
    hash maps holds after a connection made from the cgroup (tcp-state's sockops_flows records
    the connection in `flow_states`)."""
    cgroup = attach_cgroup(program, prog_fd)
    if cgroup is None or not connect_from(cgroup, program["name"]):
        return
    held = [f"{m['name']} {entries(fds[m['name']], m)}" for m in program["maps"] if m["type"] in HASH_MAPS]
    say(f"ran {program['name']}: a TCP connection over loopback from its cgroup; "
        f"entries: {', '.join(held) or 'no hash map'}")


def attach_echo(loaded: list[tuple[dict, int, dict[str, int]]], ifname: str) -> None:
    """Attach the echo in driver mode with its `server` map filled; say the link, then ready, then
    the reply counters until powered off."""
    program, prog_fd, fds = next(found for found in loaded if found[0]["attach"])
    if prog_fd < 0:
        fail(f"the verifier rejected {program['name']}, the program to attach")
    fill(fds["server"], 0, bytes.fromhex(program["server"]))
    err = libbpf.bpf_xdp_attach(socket.if_nametoindex(ifname), prog_fd, XDP_FLAGS_DRV_MODE, None)
    if err:
        fail(f"native XDP attach on {ifname} refused: errno {-err}")
    say(f"attached {program['name']} to {ifname} in driver mode")
    report(ifname)
    say("ready")
    replies = next(m for m in program["maps"] if m["name"] == "replies")
    watch(fds["replies"], replies["value_size"])


def main(ifname: str) -> None:
    made: dict[tuple[str, int], int] = {}  # map fds by object and host id
    loaded = [(program, *load(program, made)) for program in receive()]
    report_shared(loaded)
    for program, prog_fd, fds in loaded:
        if program["prog_type"] == BPF_PROG_TYPE_SOCK_OPS:
            run_sock_ops(program, prog_fd, fds)
    attach_echo(loaded, ifname)


if __name__ == "__main__":
    main(sys.argv[1])
