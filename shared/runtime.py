"""Running a service process: signal handling, the consumer services' common start-up and readiness checks,
and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import health, heap, logs
from shared.messaging import Bus, Declare
from shared.outbox import OutboxRelay
from shared.settings import Settings

log = logs.get_logger(__name__)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` until SIGINT/SIGTERM sets ``stop``; main then shuts down gracefully."""

    async def _runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        import uvloop

        uvloop.run(_runner())
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(_runner())


async def every(seconds: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    """Run ``job`` forever, ``seconds`` apart; a failed run is logged and the next one still happens."""
    while True:
        try:
            await job()
        except Exception as exc:
            log.warning("job_failed", job=name, error=repr(exc))
        await asyncio.sleep(seconds)


async def stop_outbox_service(
    *,
    bus: Bus,
    relay: OutboxRelay,
    engine: AsyncEngine,
    tasks: list[asyncio.Task[None]],
    server: uvicorn.Server | None,
    after_consumers: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Graceful stop of a service that publishes through an outbox: stop consuming (in-flight handlers finish
    and ack), stop its background jobs, relay whatever is still in the outbox, then close the health server
    and the database pool."""
    await bus.stop()
    if after_consumers is not None:
        await after_consumers()
    relay.stop()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    with contextlib.suppress(Exception):
        await relay.drain_once()
    if server is not None:
        server.should_exit = True
    await engine.dispose()


async def start_consumer_service(
    service: str,
    settings: Settings,
    engine: AsyncEngine,
    bus: Bus,
    stop: asyncio.Event,
    *,
    checks: dict[str, health.ReadinessCheck] | None = None,
    warnings: Callable[[], list[str]] | None = None,
    declare: Declare | None = None,
    before_bus: Callable[[], Awaitable[bool]] | None = None,
) -> tuple[bool, uvicorn.Server | None]:
    """Health first, on the service's port (/healthz answers, /readyz says why while the broker is away:
    database and RabbitMQ, then ``checks``); then the broker, until it is up or ``stop`` is set, declaring the
    service's queues (``topology.declare_service``, or ``declare`` instead); then the start-up heap frozen.
    Returns whether the service started, and its health server (already told to exit if it did not start)."""
    server = await health.serve_service_health(
        service,
        settings.service_host,
        health.service_ports(settings)[service],
        {"database": database_check(engine), "rabbitmq": broker_check(bus), **(checks or {})},
        warnings=warnings,
    )
    own_topology = () if declare is not None else (service,)
    started = before_bus is None or await before_bus()
    if not started or not await bus.start(declare_services=own_topology, stop=stop, declare=declare):
        await stop_unstarted(server, engine)
        return False, server
    heap.settle(settings.gc_freeze)  # start-up is over: its objects leave the collector's walks
    return True, server


async def stop_unstarted(server: uvicorn.Server | None, engine: AsyncEngine) -> None:
    """Stopped while still waiting for the broker: nothing consumed, nothing to drain."""
    if server is not None:
        server.should_exit = True
    await engine.dispose()


def database_check(engine: AsyncEngine) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def broker_check(bus: Bus) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        if not bus.connected:
            raise ConnectionError(f"waiting for RabbitMQ: {bus.last_error or 'connecting'}")
        if not await bus.broker.ping(timeout=1.0):
            raise ConnectionError("RabbitMQ is not reachable (reconnecting)")

    return check
