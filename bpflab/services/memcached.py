"""A real memcached in the server namespace, for lab xdp-cache, and clients from the client's.

Debian's `memcached`, started by the runtime with UDP on (it is off by default since 1.5.6),
one worker thread, and a small memory limit; stopped by pid (NetnsServer), never by name. The
playbook keeps the packaged service stopped. The clients: `UdpClient` (and `get_udp`, for
one GET) sends GETs as single datagrams and returns the replies' payloads, as the lab's cache
must answer them; `tcp_client` is pymemcache's client with its socket made in the client
namespace, for SETs and `stats`.
"""

from __future__ import annotations

import functools
import socket
import types
from pathlib import Path

from pymemcache.client.base import Client

from bpflab.oracles.memcached import PORT, get_request
from bpflab.services.netns_server import NetnsServer
from bpflab.topology import socket_in

MEMORY_MB = 64
READY = "server listening (udp)"  # what memcached -vv prints once its UDP socket is bound
UDP_TIMEOUT = 2.0  # seconds a GET waits for its reply


class Memcached(NetnsServer):
    """memcached in netns `netns`, TCP and UDP on `port`, its log in `log`."""

    def __init__(self, netns: str, log: Path, port: int = PORT) -> None:
        argv = ["memcached", "-u", "nobody", "-l", "0.0.0.0", "-p", str(port), "-U", str(port),
                "-t", "1", "-m", str(MEMORY_MB), "-vv"]  # -vv: the listening lines, then each command
        super().__init__(netns, argv, log, READY)
        self.port = port


def netns_sockets(netns: str) -> types.SimpleNamespace:
    """The socket module, with sockets made in netns `netns` (for a client library that makes
    its own: a socket belongs to the namespace it was made in, for its whole life)."""

    return types.SimpleNamespace(**{**vars(socket), "socket": functools.partial(socket_in, netns)})


def tcp_client(netns: str, address: str, port: int = PORT) -> Client:
    """pymemcache's client to memcached at `address`, from netns `netns`."""
    return Client((address, port), socket_module=netns_sockets(netns), connect_timeout=UDP_TIMEOUT,
                  timeout=UDP_TIMEOUT)


class UdpClient:
    """GETs as single datagrams from netns `netns`, over one socket (a socket per GET would cost
    more than the GET). Replies are matched to requests by request id."""

    def __init__(self, netns: str, address: str, port: int = PORT) -> None:
        self.server = (address, port)
        self.sock = socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(UDP_TIMEOUT)
        self.sock.connect(self.server)  # replies from anywhere else are not ours

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, payload: bytes) -> bytes:
        """One datagram out (a GET, or any command); the reply's UDP payload, whose request id
        must be the datagram's (TimeoutError if none comes)."""
        self.sock.send(payload)
        while True:
            reply = self.sock.recv(65536)
            if reply[:2] == payload[:2]:
                return reply

    def get(self, key: bytes, request_id: int = 1) -> bytes:
        """`get <key>` as one datagram; the reply's UDP payload."""
        return self.send(get_request(key, request_id))


def get_udp(netns: str, address: str, key: bytes, request_id: int = 1, port: int = PORT) -> bytes:
    """One `get <key>` datagram from netns `netns`, on a socket of its own; the reply's payload."""
    with UdpClient(netns, address, port) as client:
        return client.get(key, request_id)
