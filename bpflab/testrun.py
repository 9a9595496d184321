"""BPF_PROG_TEST_RUN through libbpf: run a loaded program on a packet without any network.

The kernel hands the program a copy of `data`, returns the verdict, the packet as the program
left it, and the mean duration over `repeat` runs. Two traps, both measured on this project's
machines: the packet buffer is NOT reset between repeats (after its first run an echo
responder sees its own reply), and one run is dominated by the timer and cold caches (hundreds
of ns to microseconds, for a program that costs tens), so correctness is checked with repeat=1
and timing needs many repeats of a path that stays the same.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from functools import cache

from bpflab import libbpf

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
MAX_PACKET = 16384  # room for the program to grow the packet (bpf_xdp_adjust_tail)


class _TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts from libbpf's bpf.h (1.1)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class _XdpMd(ctypes.Structure):
    """struct xdp_md: the context of an XDP program, as test-run takes it."""

    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


@cache
def _libbpf() -> ctypes.CDLL:
    lib = libbpf.lib()
    lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(_TestRunOpts)]
    return lib


@dataclass(frozen=True)
class RunResult:
    verdict: int  # the program's return value (XDP_PASS = 2, TC_ACT_OK = 0, ...)
    packet: bytes  # the packet as the program left it
    ns_per_run: int  # mean duration over the repeats, in ns


def run(prog_fd: int, packet: bytes, repeat: int = 1) -> RunResult:
    """Run the program once (or `repeat` times on the same, NOT reset, buffer)."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(MAX_PACKET)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_out=ctypes.cast(data_out, ctypes.c_void_p),
        data_size_in=len(packet),
        data_size_out=MAX_PACKET,
        repeat=repeat,
    )
    _call(prog_fd, opts)
    return RunResult(ctypes.c_int32(opts.retval).value, data_out.raw[: opts.data_size_out], opts.duration)


def live_frames(prog_fd: int, packet: bytes, ifindex: int, count: int, batch_size: int = 64) -> int:
    """Send `count` copies of `packet` for real: the program's XDP_TX goes out of `ifindex`.

    This is XDP's live-frames mode, a load generator that bypasses the sender's socket stack.
    It must be called inside the netns of `ifindex`. Returns the mean ns per frame.
    """
    data_in = ctypes.create_string_buffer(packet, len(packet))
    ctx = _XdpMd(data_end=len(packet), ingress_ifindex=ifindex)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_size_in=len(packet),
        ctx_in=ctypes.cast(ctypes.pointer(ctx), ctypes.c_void_p),
        ctx_size_in=ctypes.sizeof(ctx),
        repeat=count,
        flags=BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size=batch_size,
    )
    _call(prog_fd, opts)
    return opts.duration


class Refused(OSError):
    """The kernel's harness would not run the program on this frame (EINVAL).

    It refuses frames shorter than an Ethernet header, and for TC programs also IPv4 and IPv6
    frames too short for their IP header. A real interface can still deliver those to TC.
    """


def _call(prog_fd: int, opts: _TestRunOpts) -> None:
    if _libbpf().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)) != 0:
        err = ctypes.get_errno()
        error = Refused if err == errno.EINVAL else OSError
        raise error(err, f"BPF_PROG_TEST_RUN failed: {os.strerror(err)}")
