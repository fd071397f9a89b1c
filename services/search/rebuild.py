"""Full rebuilds without downtime: load a new generation from PostgreSQL, switch the pointer, catch up,
drop the old generation. Queries keep reading the old generation (or PostgreSQL) meanwhile."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from shared import logs, metrics
from shared.search_index import store
from shared.search_index.index import Index, new_generation, text

log = logs.get_logger(__name__)

# Changes committed this long before the build began are re-applied after the switch (clock and
# transaction-visibility slack: a row committed just before our snapshot may carry an earlier timestamp).
CATCH_UP_MARGIN = timedelta(seconds=30)

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class RebuildReport:
    generation: str
    events: int
    seconds: float
    caught_up: int
    dropped_keys: int


async def _reporting(
    batches: AsyncIterator[list[store.Doc]], progress: Callable[[int], None]
) -> AsyncIterator[list[store.Doc]]:
    read = 0
    async for b in batches:
        read += len(b)
        progress(read)
        yield b


async def rebuild(
    index: Index,
    engine: AsyncEngine,
    reason: str,
    lock_seconds: int = 900,
    batch: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> RebuildReport | None:
    """Rebuild into a new generation; None if another rebuild holds the lock.

    ``progress(events_read)`` is called after each batch is read from PostgreSQL."""
    redis, pointers = index.redis, index.pointers
    token = uuid.uuid4().hex
    if not await redis.set(pointers.lock, token, nx=True, ex=lock_seconds):
        return None
    started = time.perf_counter()
    gen = new_generation()
    try:
        abandoned = await redis.get(pointers.building)
        if abandoned:  # a rebuild that died half way: its keys are garbage
            await index.drop(text(abandoned))
        await redis.set(pointers.building, gen)
        snapshot_at = await store.db_now(engine)
        loaded: dict[str, int] = {}
        docs = store.iter_docs(engine, batch)
        count = await index.build(gen, docs if progress is None else _reporting(docs, progress), loaded)
        old = await index.current()
        pipe = redis.pipeline(transaction=True)
        pipe.set(pointers.current, gen)
        pipe.delete(pointers.building)
        await pipe.execute()
        index.forget_current()
        # Messages handled during the build went to the old generation; PostgreSQL has their effect.
        caught_up = 0
        for doc in await store.changed_since(engine, snapshot_at - CATCH_UP_MARGIN):
            if doc.version > loaded.get(doc.event_id, -1):  # changed after its batch was read
                caught_up += await index.upsert(gen, doc)
        dropped = await index.drop(old) if old and old != gen else 0
    except BaseException:
        await index.drop(gen)
        await redis.delete(pointers.building)
        raise
    finally:
        await redis.eval(RELEASE, 1, pointers.lock, token)  # type: ignore[misc]
    seconds = time.perf_counter() - started
    metrics.INDEX_REBUILDS.labels(reason=reason).inc()
    metrics.INDEX_REBUILD_SECONDS.observe(seconds)
    log.info(
        "search_index_rebuilt",
        generation=gen,
        events=count,
        seconds=round(seconds, 3),
        reason=reason,
        caught_up=caught_up,
    )
    return RebuildReport(gen, count, seconds, caught_up, dropped)
