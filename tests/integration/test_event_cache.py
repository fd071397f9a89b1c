"""The event detail cache against real Redis: a stampede of readers on a missing entry loads it from
PostgreSQL once, an invalidation during a load keeps the stale result out, and a flood of readers of an unknown
event reads PostgreSQL once until the event is created. This test's own key prefix, cleaned up after."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.search_index.cache import EventCache
from shared.topology import Names


@pytest.fixture
async def cache(scratch_redis: tuple[aioredis.Redis, Names]) -> EventCache:
    return EventCache(*scratch_redis)


class Source:
    """PostgreSQL's side of the cache: counts the loads, and answers what the event is now."""

    def __init__(self, event_id: str, title: str = "Đêm nhạc Trịnh") -> None:
        self.event_id = event_id
        self.title = title
        self.loads = 0

    async def load(self) -> dict[str, Any] | None:
        self.loads += 1
        await asyncio.sleep(0)  # let the other readers in while this one loads
        types = [{"ticket_type_id": "t1", "available": 5}]
        return {"event_id": self.event_id, "title": self.title, "ticket_types": types}

    async def availability(self) -> dict[str, int]:
        return {"t1": 5}


async def test_a_stampede_on_a_missing_entry_loads_it_once(cache: EventCache) -> None:
    for _ in range(30):  # the lost race, if there is one, is a matter of interleaving: many rounds
        source = Source(str(uuid.uuid4()))
        readers = []
        for _ in range(60):  # arriving one after another while the first reader loads, as requests do
            readers.append(asyncio.create_task(cache.get_event(source.event_id, source.load, source.availability)))
            await cache.redis.ping()
        results = await asyncio.gather(*readers)
        assert source.loads == 1
        assert all(r is not None and r["title"] == "Đêm nhạc Trịnh" for r in results)


async def test_a_change_during_a_load_keeps_the_older_result_out_of_the_cache(cache: EventCache) -> None:
    event_id = str(uuid.uuid4())
    source = Source(event_id, "before")

    async def load_then_change() -> dict[str, Any] | None:
        event = await source.load()
        source.title = "after"
        await cache.invalidate(event_id, version=2)  # the admin route, while this load was reading
        return event

    first = await cache.get_event(event_id, load_then_change, source.availability)
    assert first is not None and first["title"] == "before"
    again = await cache.get_event(event_id, source.load, source.availability)
    assert again is not None and again["title"] == "after"
    assert source.loads == 2


async def test_a_flood_of_reads_for_an_unknown_event_reads_postgresql_once(cache: EventCache) -> None:
    event_id = str(uuid.uuid4())
    source = Source(event_id)
    exists = False

    async def load() -> dict[str, Any] | None:
        source.loads += 1
        await asyncio.sleep(0)
        return {"event_id": event_id, "title": "Đêm nhạc Trịnh", "ticket_types": []} if exists else None

    started = time.monotonic()
    readers = []
    for _ in range(40):
        readers.append(asyncio.create_task(cache.get_event(event_id, load, source.availability)))
        await cache.redis.ping()
    assert await asyncio.gather(*readers) == [None] * 40
    assert source.loads == 1
    assert time.monotonic() - started < cache.wait_seconds  # nobody waited out the lock of a load that found none

    exists = True  # the event is created: its invalidation clears the absence at once, not after its TTL
    await cache.invalidate(event_id, version=1)
    found = await cache.get_event(event_id, load, source.availability)
    assert found is not None and found["event_id"] == event_id
    assert source.loads == 2
