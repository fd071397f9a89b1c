"""Gateway wiring: FastAPI app, database (read-only views), Redis, the broker and its reply queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import (
    api,
    auth,
    observability,
    ops_api,
    payments_admin_api,
    payments_api,
    problems,
    ratelimit,
    search_api,
)
from services.gateway.edge import BodyLimit
from services.gateway.ratelimit import RateLimit
from services.gateway.soldout import SoldOutGate
from shared import health, logs, runtime
from shared.db import make_engine
from shared.messaging import Bus
from shared.requests import Requester
from shared.settings import Settings, get_settings
from shared.topology import Names


class CorrelationMiddleware:
    """Take X-Correlation-Id from the request (or make one), log with it, pass it on, echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-correlation-id", b"").decode("latin-1")[:64]
        cid = given if given.replace("-", "").isalnum() else logs.new_correlation_id()
        logs.set_correlation_id(cid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", cid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure("gateway", settings.log_level, settings.log_json)
    engine = make_engine(settings.database_url, pool_size=20)
    bus = Bus(settings, "gateway")
    requester = Requester(bus)
    sold_out = SoldOutGate(settings.sold_out_gate_seconds)
    sold_out.listen(bus)
    redis = aioredis.from_url(settings.redis_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Connect in the background: the catalog, search, order status and the return URL need no broker, and
        # /readyz says why the gateway is not ready; a checkout meanwhile gets 503 with Retry-After.
        connecting = asyncio.create_task(bus.start(), name="broker-connect")
        yield
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        await bus.stop()
        await redis.aclose()
        await engine.dispose()

    app = FastAPI(
        title="ticketing",
        version="0.1.0",
        description="Event tickets: holds without oversell, on-time release, payments, search, email.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.bus = bus
    app.state.requester = requester
    app.state.sold_out = sold_out
    app.state.redis = redis
    app.state.names = Names(settings.prefix)
    problems.install(app)
    problems.document(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, admin_limit=settings.max_admin_body_bytes)
    observability.install(app)  # inside CorrelationMiddleware: the access log needs the id
    app.add_middleware(CorrelationMiddleware)
    app.include_router(api.router)
    # payments_api is the payment team's module: its routes (IPN, return URL) get their limit here, per source.
    app.include_router(payments_api.router, dependencies=[Depends(RateLimit(ratelimit.PAYMENTS))])
    app.include_router(ops_api.router)
    app.include_router(payments_admin_api.router)
    app.include_router(search_api.router)

    async def redis_check() -> None:
        await redis.ping()

    async def is_admin(request: Request) -> bool:
        user = await auth.optional_user(request)
        return user is not None and user.is_admin

    # Anonymous callers get a bare status from /readyz (its failures name internal hosts and ports); admins
    # get the details. /metrics on this public port is for admins only (Prometheus sends a bearer token).
    app.include_router(
        health.health_router(
            {
                "database": runtime.database_check(engine),
                "rabbitmq": runtime.broker_check(bus),
                "redis": redis_check,
            },
            show_details=is_admin,
            metrics=False,
        ),
        dependencies=[Depends(RateLimit(ratelimit.HEALTH))],
    )

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics (admin bearer token required)")
    async def metrics(admin: auth.AdminUser) -> Response:
        return health.metrics_response()

    return app
