"""What a program returns to its hook, by the kernel's names (include/uapi/linux/bpf.h and
pkt_cls.h): the numbers come back from test-run and from maps, and a test or a message names them.
"""

from __future__ import annotations

from enum import IntEnum


class XdpVerdict(IntEnum):
    XDP_ABORTED = 0  # an error: the frame is dropped and a tracepoint fires
    XDP_DROP = 1
    XDP_PASS = 2  # on to the kernel's stack
    XDP_TX = 3  # back out of the interface it came in on
    XDP_REDIRECT = 4


class TcVerdict(IntEnum):
    TC_ACT_UNSPEC = -1  # the qdisc's default: like TC_ACT_OK for a direct-action program
    TC_ACT_OK = 0
    TC_ACT_RECLASSIFY = 1
    TC_ACT_SHOT = 2  # dropped
    TC_ACT_PIPE = 3
    TC_ACT_STOLEN = 4
    TC_ACT_QUEUED = 5
    TC_ACT_REPEAT = 6
    TC_ACT_REDIRECT = 7  # what bpf_redirect() returns: sent where it said
    TC_ACT_TRAP = 8


XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = XdpVerdict
(TC_ACT_UNSPEC, TC_ACT_OK, TC_ACT_RECLASSIFY, TC_ACT_SHOT, TC_ACT_PIPE, TC_ACT_STOLEN, TC_ACT_QUEUED,
 TC_ACT_REPEAT, TC_ACT_REDIRECT, TC_ACT_TRAP) = TcVerdict
XDP_VERDICTS = {int(v): v.name for v in XdpVerdict}  # number -> name, for messages
TC_VERDICTS = {int(v): v.name for v in TcVerdict}


def verdict(hook: str, value: int) -> str:
    """`XDP_PASS`, or the number with why it is no verdict: the kernel drops such frames."""
    names = XDP_VERDICTS if hook == "xdp" else TC_VERDICTS
    if value in names:
        return names[value]
    if hook == "xdp":
        return (f"{value}, which is not an XDP action (XDP_ABORTED 0, XDP_DROP 1, XDP_PASS 2, XDP_TX 3, "
                "XDP_REDIRECT 4): the kernel treats it as XDP_ABORTED and drops the frame")
    return (f"{value}, which is not a TC action (TC_ACT_OK 0, TC_ACT_SHOT 2, TC_ACT_REDIRECT 7, ...): "
            "the kernel treats an unknown action as TC_ACT_UNSPEC")

