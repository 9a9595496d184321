"""Programs on interfaces: XDP in native or generic mode, TC at clsact ingress or egress, by netlink.

Kept apart from compiling and loading (bpflab.programs): a program is loaded once and may be
attached to several interfaces, each attachment remembered by the program so that
`program.close()` takes it away again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from pyroute2 import NetlinkError, NetNS

from bpflab.programs import Program, ProgramError

P = ParamSpec("P")
R = TypeVar("R")

# Flags of IFLA_XDP (include/uapi/linux/if_link.h).
XDP_FLAGS_SKB_MODE = 1 << 1  # generic XDP: runs after the skb is built, works on any device
XDP_FLAGS_DRV_MODE = 1 << 2  # native XDP: runs in the driver, before any skb exists
XDP_MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}

# tc's clsact qdisc has two hooks; these are their parent handles.
TC_PARENTS = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}


def outside_event_loop(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` in a worker thread when the caller's thread runs an asyncio loop.

    pyroute2 0.9 drives netlink with an asyncio loop of its own, which cannot start inside a
    running one, and a Jupyter kernel runs every cell inside one.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return func(*args, **kwargs)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink") as worker:
            return worker.submit(func, *args, **kwargs).result()

    return wrapper


@contextlib.contextmanager
def netlink_refusal(*codes: int) -> Iterator[None]:
    """Let the kernel refuse with these errnos, which mean the state is already the one wanted;
    any other refusal is raised."""
    try:
        yield
    except NetlinkError as err:
        if err.code not in codes:
            raise


def existing_netns(name: str) -> NetNS:
    """A netlink socket in netns `name`. Unlike pyroute2's default, never creates the netns."""
    return NetNS(name, flags=0)


def _index(ns: NetNS, ifname: str) -> int:
    found = ns.link_lookup(ifname=ifname)
    if not found:
        raise ProgramError("attach", f"There is no interface {ifname} in this namespace.")
    return found[0]


@outside_event_loop
def attach_xdp(netns: str, ifname: str, fd: int, mode: str = "native") -> str:
    """Attach the XDP program `fd` to `ifname` in `netns`; return the mode it runs in.

    Native (driver) mode is tried first. If the driver refuses it, generic mode is used and a
    warning says so: a silent fall-back would make every measurement lie.
    """
    with existing_netns(netns) as ns:
        index = _index(ns, ifname)
        try:
            ns.link("set", index=index, xdp_fd=fd, xdp_flags=XDP_MODES[mode])
            return mode
        except Exception as exc:
            if mode != "native":
                raise ProgramError("attach", f"Cannot attach XDP to {ifname}: {exc}") from exc
            warnings.warn(
                f"{ifname}: native XDP refused ({exc}); attached in generic (skb) mode instead",
                stacklevel=2,
            )
            ns.link("set", index=index, xdp_fd=fd, xdp_flags=XDP_FLAGS_SKB_MODE)
            return "generic"


@outside_event_loop
def xdp_mode(netns: str, ifname: str) -> str | None:
    """The mode of the XDP program on `ifname` ("native", "generic") or None."""
    with existing_netns(netns) as ns:
        info = ns.link("get", index=_index(ns, ifname))[0].get("IFLA_XDP")
    attrs = dict(info["attrs"]) if info else {}
    if "IFLA_XDP_DRV_PROG_ID" in attrs:
        return "native"
    if "IFLA_XDP_SKB_PROG_ID" in attrs:
        return "generic"
    return None


@outside_event_loop
def detach_xdp(netns: str, ifname: str) -> None:
    """Remove whatever XDP program `ifname` carries, in either mode."""
    with existing_netns(netns) as ns:
        index = _index(ns, ifname)
        for flags in XDP_MODES.values():
            with netlink_refusal(errno.EINVAL, errno.EOPNOTSUPP):  # a mode the driver lacks
                ns.link("set", index=index, xdp_fd=-1, xdp_flags=flags)


@outside_event_loop
def attach_tc(netns: str, ifname: str, fd: int, name: str, direction: str = "ingress") -> None:
    """Attach the SCHED_CLS program `fd` at clsact ingress or egress, in direct-action mode."""
    with existing_netns(netns) as ns:
        index = _index(ns, ifname)
        with netlink_refusal(errno.EEXIST):  # the qdisc may be there already
            ns.tc("add", "clsact", index)
        ns.tc(
            "add-filter", "bpf", index, ":1", fd=fd, name=name,
            parent=TC_PARENTS[direction], classid=1, direct_action=True,
        )


@outside_event_loop
def detach_tc(netns: str, ifname: str) -> None:
    """Remove the clsact qdisc, and with it every TC program on `ifname`."""
    with existing_netns(netns) as ns, netlink_refusal(errno.ENOENT, errno.EINVAL):  # no qdisc: nothing to do
        ns.tc("del", "clsact", _index(ns, ifname))


def attach(program: Program, netns: str, ifname: str, **options: str) -> str:
    """Attach `program` at its own hook; remember it so that `program.close()` detaches it."""
    if program.hook == "xdp":
        result = attach_xdp(netns, ifname, program.fd, **options)
    else:
        direction = options.get("direction", "ingress")
        attach_tc(netns, ifname, program.fd, program.name, direction)
        result = f"tc {direction}"
    detach = detach_xdp if program.hook == "xdp" else detach_tc
    program.attachments.append(functools.partial(detach, netns, ifname))
    return result
