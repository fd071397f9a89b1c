"""Gateway wiring: FastAPI app, database (read-only views), Redis, the broker and its reply queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import api, observability, ops_api, payments_admin_api, payments_api, problems, search_api
from services.gateway.requests import Requester
from shared import health, logs, runtime
from shared.db import make_engine
from shared.messaging import Bus
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
    redis = aioredis.from_url(settings.redis_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await bus.start()
        yield
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
    app.state.redis = redis
    app.state.names = Names(settings.prefix)
    problems.install(app)
    observability.install(app)  # inside CorrelationMiddleware: the access log needs the id
    app.add_middleware(CorrelationMiddleware)
    app.include_router(api.router)
    app.include_router(payments_api.router)
    app.include_router(ops_api.router)
    app.include_router(payments_admin_api.router)
    app.include_router(search_api.router)

    async def redis_check() -> None:
        await redis.ping()

    app.include_router(health.health_router({
        "database": runtime.database_check(engine),
        "rabbitmq": runtime.broker_check(bus),
        "redis": redis_check,
    }))
    return app
