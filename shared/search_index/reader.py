"""The read side the gateway uses: search and the homepage from the index, PostgreSQL when the index is
missing or rebuilding (read-through), and the write-through wait of the admin routes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import logs, metrics
from shared.search_index import store
from shared.search_index.domain import Doc, Filters, Page, Query
from shared.search_index.index import Index
from shared.topology import Names

log = logs.get_logger(__name__)

POINTER_MAX_AGE = 1.0  # seconds a gateway reuses the current-generation pointer
# The read-through path costs PostgreSQL about a second per search at 100,000 events: while Redis is being
# rebuilt (or is down), each gateway process runs a few at a time, searches and homepage pages alike, and sheds
# the rest (503 + Retry-After) after a short wait rather than swamp the database or its own event loop.
FALLBACK_CONCURRENCY = 4
FALLBACK_QUEUE_SECONDS = 1.0


class SearchUnavailable(Exception):
    """The index is missing and the read-through path is saturated: try again shortly."""


@dataclass
class SearchReader:
    redis: aioredis.Redis
    names: Names
    engine: AsyncEngine
    fallback_concurrency: int = FALLBACK_CONCURRENCY
    fallback_queue_seconds: float = FALLBACK_QUEUE_SECONDS

    def __post_init__(self) -> None:
        self.index = Index(self.redis, self.names)
        self._fallback_slots = asyncio.Semaphore(self.fallback_concurrency)

    @contextlib.asynccontextmanager
    async def _fallback_slot(self) -> AsyncIterator[None]:
        try:
            if self.fallback_queue_seconds <= 0:
                if self._fallback_slots.locked():
                    raise TimeoutError
                await self._fallback_slots.acquire()
            else:
                async with asyncio.timeout(self.fallback_queue_seconds):
                    await self._fallback_slots.acquire()
        except TimeoutError as exc:
            metrics.SEARCH_FALLBACKS.labels(reason="shed").inc()
            raise SearchUnavailable("search index rebuilding and the database path is busy") from exc
        try:
            yield
        finally:
            self._fallback_slots.release()

    async def _generation(self) -> str | None:
        try:
            return await self.index.current(max_age=POINTER_MAX_AGE)
        except Exception as exc:  # Redis down: PostgreSQL answers
            log.warning("search_index_unreachable", error=repr(exc))
            return None

    async def search(self, query: Query, filters: Filters, offset: int, limit: int) -> Page:
        started = time.perf_counter()
        page = await self._from_index(query, filters, offset, limit)
        if page is None:
            async with self._fallback_slot():
                page = await store.search(self.engine, query, filters, offset, limit)
        metrics.SEARCH_LATENCY.labels(source=page.source).observe(time.perf_counter() - started)
        return page

    async def _from_index(self, query: Query, filters: Filters, offset: int, limit: int) -> Page | None:
        gen = await self._generation()
        if gen is None:
            metrics.SEARCH_FALLBACKS.labels(reason="no_index").inc()
            return None
        try:
            page = await self.index.search(gen, query, filters, offset, limit)
        except Exception as exc:
            log.warning("search_index_failed", error=repr(exc))
            page = None
        if page is None:  # the generation vanished (Redis restarted, flushed) or is not ready
            self.index.forget_current()
            metrics.SEARCH_FALLBACKS.labels(reason="index_gone").inc()
        return page

    async def upcoming(self, offset: int, limit: int) -> tuple[list[Doc], str]:
        """The homepage: the index's upcoming-events order, written through on every catalog change."""
        page = await self._from_index(Query(), Filters(), offset, limit)
        if page is not None:
            metrics.CACHE_REQUESTS.labels(cache="homepage", result="hit").inc()
            return [h.doc for h in page.hits], "index"
        metrics.CACHE_REQUESTS.labels(cache="homepage", result="miss").inc()
        async with self._fallback_slot():
            return await store.upcoming(self.engine, offset, limit), "database"

    async def event_version(self, event_id: UUID) -> int | None:
        return await store.event_version(self.engine, event_id)

    async def wait_searchable(self, event_id: UUID, version: int, wait_seconds: float) -> bool:
        """True once a search issued now would find this version of the event (or a newer one).

        The index has that version, or there is no index (PostgreSQL answers searches then).
        """
        deadline = time.monotonic() + wait_seconds
        delay = 0.002
        while True:
            try:
                gen = await self.index.current()
                if gen is None or not await self.index.ready(gen):
                    return True
                doc = await self.index.get_doc(gen, str(event_id))
                if doc is not None and doc.version >= version:
                    return True
            except Exception as exc:
                log.warning("search_index_unreachable", error=repr(exc))
                return True  # searches read PostgreSQL while Redis is unreachable
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.02)
