"""The gateway's access log and HTTP request metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import logs

log = logs.get_logger("services.gateway.access")

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class HttpMiddleware:
    """An ASGI middleware for HTTP requests: anything else (lifespan, websockets) passes straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class CorrelationMiddleware(HttpMiddleware):
    """Take X-Correlation-Id from the request (or make one), log with it, pass it on, echo it back."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = dict(scope["headers"]).get(b"x-correlation-id", b"").decode("latin-1")[:64]
        cid = given if given.replace("-", "").isalnum() else logs.new_correlation_id()
        logs.set_correlation_id(cid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", cid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class AccessLogMiddleware(HttpMiddleware):
    """One line per request: method, path, status, duration (and, from the context, the correlation id).

    It must sit inside ``CorrelationMiddleware`` so the id is bound before the line is written. The query
    string is left out: it can carry signed payment parameters and search terms nobody needs in a log.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
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


def install(app: FastAPI) -> Instrumentator:
    """Add the access log and request metrics; call before adding ``CorrelationMiddleware`` (outermost).
    Returns the instrumentator, whose instrumentations the checkout's fast path records into (fastpath.py)."""
    app.add_middleware(AccessLogMiddleware)
    # Metrics are labelled by route template (not the raw path) and status class, so cardinality stays
    # bounded; /metrics is already served by shared.health, so the instrumentator only instruments.
    instrumentator = Instrumentator(excluded_handlers=["/metrics"])
    default = metrics.default()  # None when another app in this process registered them already
    if default is not None:
        instrumentator.add(default)
    return instrumentator.instrument(app)
