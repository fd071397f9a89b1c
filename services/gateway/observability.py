"""The gateway's access log and HTTP request metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs

log = logs.get_logger("services.gateway.access")

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLogMiddleware:
    """One line per request: method, path, status, duration (and, from the context, the correlation id).

    It must sit inside ``CorrelationMiddleware`` so the id is bound before the line is written. The query
    string is left out: it can carry signed payment parameters and search terms nobody needs in a log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before it starts a response

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            if status >= 500:
                emit = log.warning
            elif scope["path"] in PROBE_PATHS:
                emit = log.debug  # probes and scrapes every few seconds would drown the real requests
            else:
                emit = log.info
            emit("http_request", method=scope["method"], path=scope["path"], status=status, duration_ms=duration_ms)


def install(app: FastAPI) -> None:
    """Add the access log and request metrics; call before adding ``CorrelationMiddleware`` (outermost)."""
    app.add_middleware(AccessLogMiddleware)
    # Metrics are labelled by route template (not the raw path) and status class, so cardinality stays
    # bounded; /metrics is already served by shared.health, so the instrumentator only instruments.
    Instrumentator(excluded_handlers=["/metrics"]).instrument(app)
