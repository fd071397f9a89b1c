"""Search service wiring: the catalog/stock consumer, the index monitor (self-healing rebuilds), health."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from services.search import rebuild
from services.search.handlers import SearchHandlers
from shared import logs, runtime, topology
from shared.db import make_engine
from shared.messages import EventCancelled, EventCreated, StockChanged, TicketTypeAdded
from shared.messaging import Bus, Route
from shared.search_index import store
from shared.search_index.cache import make_cache
from shared.search_index.index import Index
from shared.settings import Settings, get_settings
from shared.topology import Names

log = logs.get_logger(__name__)

# Consecutive checks that must disagree with PostgreSQL before the index counts as outdated (a change whose
# message is still in flight disagrees for a moment and must not trigger a rebuild).
OUTDATED_AFTER_CHECKS = 3


def build(settings: Settings) -> tuple[Bus, SearchHandlers]:
    engine = make_engine(settings.database_url, pool_size=4)
    redis = aioredis.from_url(settings.redis_url)
    index = Index(redis, Names(settings.prefix))
    handlers = SearchHandlers(engine, redis, index, make_cache(redis, settings))
    bus = Bus(settings, "search")
    bus.consume(
        topology.SEARCH_CATALOG,
        {
            topology.EVENT_CREATED: Route(EventCreated, handlers.on_event_changed),
            topology.TICKET_TYPE_ADDED: Route(TicketTypeAdded, handlers.on_event_changed),
            topology.STOCK_CHANGED: Route(StockChanged, handlers.on_stock_changed),
            topology.EVENT_CANCELLED: Route(EventCancelled, handlers.on_event_cancelled),
        },
    )
    return bus, handlers


async def check_once(handlers: SearchHandlers, disagreements: int) -> int:
    """Rebuild a missing index at once, an outdated one after a few checks; returns the disagreement count."""
    index, engine = handlers.index, handlers.engine
    gen = await index.current()
    if gen is None or not await index.ready(gen):
        if await rebuild.rebuild(index, engine, reason="missing"):
            return 0
        return disagreements
    meta = await index.meta(gen)
    indexed = (int(meta.get("events", 0)), int(meta.get("max_version", 0)))
    if indexed == await store.catalog_state(engine):
        return 0
    disagreements += 1
    if disagreements >= OUTDATED_AFTER_CHECKS:
        log.warning("search_index_outdated", indexed=indexed)
        await rebuild.rebuild(index, engine, reason="outdated")
        return 0
    return disagreements


async def monitor(handlers: SearchHandlers, interval: float) -> None:
    disagreements = 0
    while True:
        try:
            disagreements = await check_once(handlers, disagreements)
        except Exception as exc:
            log.warning("search_monitor_failed", error=repr(exc))
        await asyncio.sleep(interval)


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    logs.configure("search", settings.log_level, settings.log_json)
    bus, handlers = build(settings)

    async def redis_check() -> None:
        await handlers.redis.ping()

    started, server = await runtime.start_consumer_service(
        "search", settings, handlers.engine, bus, stop, checks={"redis": redis_check}
    )
    if not started:
        await handlers.redis.aclose()
        return
    task = asyncio.create_task(monitor(handlers, settings.search_check_interval_seconds), name="index-monitor")
    log.info("search_started", prefix=settings.prefix)
    await stop.wait()
    log.info("search_stopping")
    await bus.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if server:
        server.should_exit = True
    await handlers.redis.aclose()
    await handlers.engine.dispose()
