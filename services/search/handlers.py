"""The search service's consumers: catalog changes re-read the event from PostgreSQL and write it through
to the index (and drop its cached detail); stock changes refresh availability in the index and the brief
availability cache."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import logs, metrics
from shared.messages import EventCancelled, EventInfo, StockChanged
from shared.messaging import Delivery
from shared.search_index import store
from shared.search_index.cache import EventCache
from shared.search_index.index import Index, text

log = logs.get_logger(__name__)


@dataclass
class SearchHandlers:
    engine: AsyncEngine
    redis: aioredis.Redis
    index: Index
    cache: EventCache

    async def on_event_changed(self, msg: EventInfo, delivery: Delivery) -> None:
        # The message says *that* the event changed; PostgreSQL says what it is now (with its version and
        # current stock), so a late or duplicated message can never put an older state in the index.
        for doc in await store.load_docs(self.engine, [msg.event_id]):
            await self.cache.invalidate(doc.event_id, doc.version)
            gen = await self.index.current()
            if gen is None:
                continue  # no index: searches read PostgreSQL, and the monitor is rebuilding from it
            if await self.index.upsert(gen, doc):
                metrics.INDEX_WRITES.labels(kind="event").inc()

    async def on_event_cancelled(self, msg: EventCancelled, delivery: Delivery) -> None:
        # No longer on sale: out of the live generation and one being built (a rebuild reads only events on sale).
        pointers = self.index.pointers
        for gen in [text(g) for g in await self.redis.mget(pointers.current, pointers.building) if g]:
            if await self.index.remove(gen, str(msg.event_id)):
                metrics.INDEX_WRITES.labels(kind="remove").inc()
        version = await store.event_version(self.engine, msg.event_id)
        if version is not None:
            await self.cache.invalidate(str(msg.event_id), version)

    async def on_stock_changed(self, msg: StockChanged, delivery: Delivery) -> None:
        available = msg.capacity - msg.held - msg.sold
        pointers = self.index.pointers
        gens = [text(g) for g in await self.redis.mget(pointers.current, pointers.building) if g]
        for gen in gens:  # the generation being built gets it too (if the event is already loaded there)
            if await self.index.set_stock(gen, str(msg.event_id), str(msg.ticket_type_id), available) >= 0:
                metrics.INDEX_WRITES.labels(kind="stock").inc()
        await self.cache.stock_changed(str(msg.event_id), str(msg.ticket_type_id), available)
