import os
import socket

import uvicorn

from services.gateway.app import create_app
from shared import metrics
from shared.settings import Settings, get_settings


def listening_socket(settings: Settings) -> socket.socket:
    """The API socket, bound here rather than by uvicorn so that several gateway processes can share the port
    (SO_REUSEPORT, when settings ask for it: the kernel balances new connections across the processes)."""
    family = socket.AF_INET6 if ":" in settings.gateway_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn sets itself
    if settings.gateway_reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.gateway_host, settings.gateway_port))
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    settings = get_settings()
    metrics.PROCESS.info(
        {"service": "gateway", "replica": os.environ.get("TICKETING_REPLICA", "gateway"), "pid": str(os.getpid())}
    )
    config = uvicorn.Config(
        create_app(settings),
        # Logging stays as shared.logs configured it (JSON when asked); the gateway's own access log
        # (services/gateway/observability.py) replaces uvicorn's, which has no correlation id.
        log_level="warning",
        access_log=False,
        log_config=None,
        # Longer than the usual client/load-balancer idle timeout, so the server is not the side that
        # closes an idle keep-alive connection while a request is being sent on it.
        timeout_keep_alive=75,
    )
    uvicorn.Server(config).run(sockets=[listening_socket(settings)])
