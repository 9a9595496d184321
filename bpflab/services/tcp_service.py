"""The tcp-state lab's TCP server, and the clients that talk to it from the client namespace.

The protocol is one line: the client asks for `<n>` bytes (and `close` if the server should
close first, which leaves the server's side in TIME_WAIT), may send data of its own, and
closes when it likes. The server counts what it received and logs one line per connection, so
a test knows the exact bytes each side sent. It runs inside the server namespace, in the lab's
cgroup when a sock_ops program must see its sockets, and is stopped by pid (NetnsServer).

    python -m bpflab.services.tcp_service --port 8080
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from bpflab.services.netns_server import NetnsServer
from bpflab.topology import socket_in

if TYPE_CHECKING:
    from bpflab.cgroups import ProgramCgroup

PORT = 8080
BACKLOG = 16  # small, as a busy server's would be under a flood: a SYN flood fills it quickly
READY = "listening on port"
CHUNK = 65536
CLIENT_TIMEOUT = 5.0  # seconds a lab client waits for the server
LOG_LOCK = threading.Lock()
# The server's congestion control, set rather than inherited from the host (this course's
# machines have had cubic and bbr; a namespace may not choose for itself, a root socket may).
# BBR resizes the window on a schedule of its own, so a figure a program read at the last ACK can
# be far from ss's a moment later; cubic changes it only when an ACK arrives, which hooks see.
CONGESTION_CONTROL = b"cubic"


def serve_connection(conn: socket.socket, peer: tuple[str, int]) -> None:
    """Answer one client: read its request line, send what it asked, count what it sends."""
    with conn, conn.makefile("rb") as stream:  # one buffered reader for the line and what follows
        request = stream.readline().split()
        wanted = int(request[0]) if request and request[0].isdigit() else 0
        conn.sendall(b"x" * wanted)
        if b"close" in request:
            conn.shutdown(socket.SHUT_WR)  # our FIN first: this side ends in TIME_WAIT
        received = 0
        while data := stream.read1(CHUNK):
            received += len(data)
    with LOG_LOCK:  # one whole line at a time: connections end on several threads
        print(f"closed {peer[0]}:{peer[1]} sent {wanted} received {received}", flush=True)


def serve(port: int, backlog: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, CONGESTION_CONTROL)  # accepted: the same
    listener.bind(("0.0.0.0", port))
    listener.listen(backlog)
    print(f"{READY} {port}", flush=True)
    while True:
        conn, peer = listener.accept()
        threading.Thread(target=serve_connection, args=(conn, peer), daemon=True).start()


class TcpServer(NetnsServer):
    """The lab's server in netns `netns`, in `cgroup` if given, stopped by pid on exit."""

    def __init__(self, netns: str, log: Path, port: int = PORT, backlog: int = BACKLOG,
                 cgroup: ProgramCgroup | None = None) -> None:
        argv = [sys.executable, "-m", "bpflab.services.tcp_service", "--port", str(port),
                "--backlog", str(backlog)]
        super().__init__(netns, argv, log, READY, cgroup=cgroup)
        self.port = port


@contextmanager
def connection(netns: str, address: str, port: int = PORT, wanted: int = 0, close: bool = False,
               send: bytes = b"") -> Iterator[socket.socket]:
    """A client connection from netns `netns` that asked for `wanted` bytes and sent `send`;
    the body runs while it is open (the server's socket is then ESTABLISHED, or FIN_WAIT after
    `close`); it reads the answer in full, then closes."""
    with socket_in(netns, socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect((address, port))
        sock.sendall(f"{wanted}{' close' if close else ''}\n".encode() + send)
        got = 0
        while got < wanted:
            data = sock.recv(CHUNK)
            if not data:
                raise ConnectionError(f"the server sent {got} of {wanted} bytes, then closed")
            got += len(data)
        yield sock


def exchange(netns: str, address: str, port: int = PORT, wanted: int = 0, close: bool = False,
             send: bytes = b"") -> int:
    """One whole connection: ask, send, read, close. Returns the client's port."""
    with connection(netns, address, port, wanted, close, send) as sock:
        if close:
            while sock.recv(CHUNK):  # the server's FIN: read to the end before closing
                pass
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--backlog", type=int, default=BACKLOG)
    args = parser.parse_args()
    with suppress(KeyboardInterrupt):
        serve(args.port, args.backlog)


if __name__ == "__main__":
    main()
