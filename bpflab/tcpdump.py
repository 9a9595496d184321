"""`tcpdump` on one end of the veth, as a notebook uses it to show who sees which frame.

tcpdump captures with a packet socket, fed where the kernel's stack meets the device: a frame
an XDP program answers never gets there. Watching both ends at once shows it. A capture needs a
moment to open (it says `listening on`), and one that never sees its packets must still end:
it is stopped through its own process id, never by name (other tcpdumps are not ours).
"""

from __future__ import annotations

import subprocess

from bpflab.processes import stop
from bpflab.topology import Side

STOP_WAIT = 3.0  # seconds tcpdump gets to print its count after SIGTERM


class Tcpdump:
    """tcpdump on `side`'s interface, in its namespace, for `count` packets matching `expression`.

    As a context manager: listening before the body runs, stopped by its pid after.
    """

    def __init__(self, side: Side, count: int = 4, expression: str = "icmp") -> None:
        self.argv = ["ip", "netns", "exec", side.netns,
                     "tcpdump", "-n", "-i", side.ifname, "-c", str(count), expression]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Tcpdump:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said = []
        while line := self.process.stderr.readline():  # "" once tcpdump has exited
            if "listening on" in line:
                return self
            said.append(line.strip())
        self.__exit__()
        raise RuntimeError(f"tcpdump did not start: {' '.join(said)}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop(self.process, STOP_WAIT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self, wait: float = 2.0) -> str:
        """The packets it printed and its count, once it has its packets or `wait` s have passed
        (then it is stopped: SIGTERM makes tcpdump print its count and exit)."""
        try:
            out, err = self.process.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            stop(self.process, STOP_WAIT)
            out, err = self.process.communicate()
        counts = [line for line in err.splitlines() if "captured" in line]
        return (out + "\n".join(counts)).strip()
