"""What every part of the VM smoke test uses: its cache folder, the guest's addresses, its error and
its voice.

The image (the run's settings disk), the bytecode (the echo's `server` value), the host side (the
netns's neighbours, QEMU's NIC) and the checks (the pings) all need the guest's addresses, and
each part reports as `vm-smoke: ...`. They live here, below all four, so that none of them has to
import another for them and the sub-package has no import cycle.
"""

from __future__ import annotations

from pathlib import Path

CACHE = Path("/var/cache/bpflab/vm-smoke")
GUEST_IPV4, GUEST_IPV6 = "198.51.100.2", "2001:db8:1::2"
GUEST_MAC = "52:54:00:5a:00:02"


class SmokeError(Exception):
    """The smoke test could not get as far as its checks; the message says where it stopped."""


def say(text: str) -> None:
    print(f"vm-smoke: {text}", flush=True)
