"""Debian's libbpf, through ctypes: the few calls BCC does not offer.

BCC keeps its maps and programs inside its own objects; a second process (the records CLI)
or a raw program (the harness's floor) needs the plain bpf() calls, which libbpf wraps.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache


@cache
def lib() -> ctypes.CDLL:
    """libbpf.so.1, loaded once, with errno kept for error messages."""
    return ctypes.CDLL("libbpf.so.1", use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno() or -result
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def obj_pin(fd: int, path: str) -> None:
    """Pin a map or program at `path` in bpffs, so that other processes can open it."""
    _check(lib().bpf_obj_pin(fd, path.encode()), f"cannot pin at {path}")


def obj_get(path: str) -> int:
    """Open a pinned map or program; the caller closes the fd."""
    return _check(lib().bpf_obj_get(path.encode()), f"cannot open {path}")


def prog_attach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    """Attach a program to a target that is not an interface (a cgroup's directory fd)."""
    _check(lib().bpf_prog_attach(prog_fd, target_fd, attach_type, 0), "cannot attach the program")


def prog_detach(prog_fd: int, target_fd: int, attach_type: int) -> None:
    _check(lib().bpf_prog_detach2(prog_fd, target_fd, attach_type), "cannot detach the program")


def map_update(fd: int, key: bytes, value: bytes) -> None:
    _check(lib().bpf_map_update_elem(fd, key, value, 0), "map update failed")


def map_delete(fd: int, key: bytes) -> None:
    _check(lib().bpf_map_delete_elem(fd, key), "map delete failed")


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a hash map (a snapshot: the map may change meanwhile)."""
    keys: list[bytes] = []
    current = None
    following = ctypes.create_string_buffer(key_size)
    while lib().bpf_map_get_next_key(fd, current, following) == 0:
        keys.append(following.raw)
        current = ctypes.create_string_buffer(following.raw, key_size)
    return keys


# struct bpf_prog_info (include/uapi/linux/bpf.h): the byte offsets of the two fields we read.
# Both date from before Linux 6.1 (verified_insns: 5.16), the oldest kernel the course supports.
PROG_INFO_SIZE = 256  # larger than the struct; the kernel needs the tail zeroed, which it is
XLATED_PROG_LEN = 20  # bytes of the program as the kernel runs it (8 per instruction)
VERIFIED_INSNS = 216  # instructions the verifier processed, over every path it walked


def prog_info(fd: int) -> tuple[int, int]:
    """(instructions in the program, instructions the verifier processed) of a loaded program."""
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    size = ctypes.c_uint32(PROG_INFO_SIZE)
    _check(lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)), "cannot read the program's info")
    field = ctypes.c_uint32.from_buffer
    return field(info, XLATED_PROG_LEN).value // 8, field(info, VERIFIED_INSNS).value
