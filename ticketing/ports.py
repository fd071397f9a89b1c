"""A free TCP port on loopback for a server this machine is about to start: the demo's services, a test run's
services, a broker node of our own.

The kernel's own pick (binding port 0) comes from the ephemeral range, the same range every outgoing
connection takes its local port from. Between the pick and the server's bind, a client socket of any process
(a PostgreSQL or AMQP connection, a load client) can take the port, and the server then fails to start with
"address already in use" (seen once in 100 soak cycles: a service exited with uvicorn's start-up failure).
So the port is drawn below that range, where only listeners live, checked by binding it, and never handed
out twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000  # below: well-known and registered ports that other software may listen on
_ATTEMPTS = 200

_handed_out: set[int] = set()
_lock = threading.Lock()


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range: read on Linux; elsewhere 32768, at or below every common
    default (Linux 32768, the IANA range and the BSDs' 49152)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port below the ephemeral range that nothing is bound to now and this process has not handed out;
    the kernel's own pick only if none is found (a machine whose ephemeral range starts too low)."""
    top = ephemeral_start()
    with _lock:
        for _ in range(_ATTEMPTS if top - LOWEST >= 1000 else 0):
            port = random.randrange(LOWEST, top)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
        return _kernel_pick(host)


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_pick(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
