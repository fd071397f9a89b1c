"""Event detail cache-aside (TTL ~15 min, invalidated on change, one rebuild at a time) and the brief
availability cache the stock events refresh. Neither is ever read to decide a sale.

Keys (per event, one hash tag so the scripts' keys share a Redis Cluster slot):

    P cache:{ev:<id>}:detail   the event as GET /events/{id} shows it (JSON), TTL event_cache_ttl_seconds;
                               or `null`: no such event, for absent_ttl_seconds (a flood of GETs for one
                               unknown id reads PostgreSQL once, not once per request)
    P cache:{ev:<id>}:ver      the newest event version invalidated: a load that started before it never writes
    P cache:{ev:<id>}:lock     the one reader rebuilding a missing entry (stampede protection)
    P cache:{ev:<id>}:avail    HASH ticket type -> available, TTL availability_cache_ttl_seconds
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from shared import metrics
from shared.search_index.index import text
from shared.settings import Settings
from shared.topology import Names

VERSION_TTL_SECONDS = 86_400  # longer than any entry plus any load

# Write only if nothing changed since the load began; the fresh availability comes with it.
SET_IF_UNCHANGED = """
local v = redis.call('GET', KEYS[2]) or '0'
if v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[3])
local n = tonumber(ARGV[5])
for i = 0, n - 1 do redis.call('HSET', KEYS[3], ARGV[6 + 2 * i], ARGV[7 + 2 * i]) end
if n > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return 1
"""

# A stock event refreshes an entry that exists; it does not create partial ones.
STOCK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# The version is the event's (read_api.events.updated_at in microseconds): invalidating twice for one change
# (the admin route, then the search consumer) or for an older change (a late message) changes nothing.
INVALIDATE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
"""

# What a reader that missed finds, in one step: the entry after all; or whether it now holds the rebuild lock
# (ARGV[3] = '1' asks for it), someone else does, or nobody does. One step, so a reader can never miss the entry,
# then see the lock free just after another reader wrote the entry and let go, and load it a second time.
LOOK = """
local detail = redis.call('GET', KEYS[1])
local avail = redis.call('HGETALL', KEYS[3])
if detail then return {detail, avail, 'hit'} end
if ARGV[3] == '1' and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {false, avail, 'mine'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {false, avail, 'busy'} end
return {false, avail, 'free'}
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Loader = Callable[[], Awaitable[dict[str, Any] | None]]
AvailabilityLoader = Callable[[], Awaitable[dict[str, int]]]


@dataclass
class EventCache:
    redis: aioredis.Redis
    names: Names
    ttl_seconds: float = 900.0
    availability_ttl_seconds: float = 10.0
    absent_ttl_seconds: float = 5.0  # short: an event created meanwhile also clears it (its invalidation)
    lock_seconds: float = 5.0
    wait_seconds: float = 5.0  # how long a reader waits for another reader's rebuild (the lock's lifetime)

    def __post_init__(self) -> None:
        self._set = self.redis.register_script(SET_IF_UNCHANGED)
        self._stock = self.redis.register_script(STOCK)
        self._look = self.redis.register_script(LOOK)
        self._release = self.redis.register_script(RELEASE)
        self._invalidate = self.redis.register_script(INVALIDATE)

    def _keys(self, event_id: str) -> tuple[str, str, str, str]:
        tag = "{ev:" + event_id + "}"
        return tuple(
            self.names.redis_key("cache", tag, part)  # type: ignore[return-value]
            for part in ("detail", "ver", "lock", "avail")
        )

    async def invalidate(self, event_id: str, version: int) -> bool:
        """Drop the cached detail unless it was already dropped for this version (or a newer one)."""
        detail, ver, _, avail = self._keys(event_id)
        return bool(await self._invalidate(keys=[ver, detail, avail], args=[version, VERSION_TTL_SECONDS]))

    async def stock_changed(self, event_id: str, ticket_type_id: str, available: int) -> None:
        _, _, _, avail = self._keys(event_id)
        await self._stock(
            keys=[avail], args=[ticket_type_id, max(available, 0), int(self.availability_ttl_seconds * 1000)]
        )

    async def get_event(
        self, event_id: str, load: Loader, load_availability: AvailabilityLoader
    ) -> dict[str, Any] | None:
        """The event detail: cached body, availability overlaid from the brief cache (or PostgreSQL); None if
        there is no such event (known from PostgreSQL, or from a short-lived absent entry)."""
        detail_key, _, lock_key, avail_key = self._keys(event_id)
        # A hit, the common case, is two plain reads (the script costs Redis about 1.5x the CPU: bench/event_cache.py).
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(detail_key)
        pipe.hgetall(avail_key)
        raw, avail = await pipe.execute()
        if raw is not None:
            metrics.CACHE_REQUESTS.labels(cache="event_detail", result="hit").inc()
            return await self._from_cache(raw, avail, avail_key, load_availability)
        metrics.CACHE_REQUESTS.labels(cache="event_detail", result="miss").inc()
        # A miss takes the lock in the same step that looks again: a rebuild may have written the entry since.
        token = uuid.uuid4().hex
        raw, avail, lock = await self._look_up(detail_key, lock_key, avail_key, token, claim=True)
        if raw is not None:
            return await self._from_cache(raw, avail, avail_key, load_availability)
        if lock == "mine":
            try:
                return await self._load(event_id, load)
            finally:
                await self._release(keys=[lock_key], args=[token])
        # Someone else is rebuilding it: wait for their result rather than hit PostgreSQL too.
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.05)  # many waiters must not flood Redis (or this process's event loop)
            raw, avail, lock = await self._look_up(detail_key, lock_key, avail_key, token, claim=False)
            if raw is not None:
                return await self._from_cache(raw, avail, avail_key, load_availability)
            if lock == "free":  # the rebuild gave up (or the event does not exist): load ourselves
                break
        return await self._load(event_id, load)

    async def _look_up(
        self, detail_key: str, lock_key: str, avail_key: str, token: str, *, claim: bool
    ) -> tuple[bytes | None, dict[bytes, bytes], str]:
        """The cached detail and availability, else who holds the rebuild lock: mine, busy or free."""
        raw, flat, lock = await self._look(
            keys=[detail_key, lock_key, avail_key], args=[token, int(self.lock_seconds * 1000), int(claim)]
        )
        return raw, dict(zip(flat[::2], flat[1::2], strict=True)), text(lock)

    async def _load(self, event_id: str, load: Loader) -> dict[str, Any] | None:
        detail_key, ver_key, _, avail_key = self._keys(event_id)
        version = text(await self.redis.get(ver_key)) or "0"
        metrics.CACHE_LOADS.labels(cache="event_detail").inc()
        event = await load()
        if event is None:
            await self._set(
                keys=[detail_key, ver_key, avail_key],
                args=[version, orjson.dumps(None), int(self.absent_ttl_seconds * 1000), 0, 0],
            )
            return None
        stock: list[Any] = []
        for t in event.get("ticket_types", []):
            stock += [str(t["ticket_type_id"]), int(t["available"])]
        await self._set(
            keys=[detail_key, ver_key, avail_key],
            args=[
                version,
                orjson.dumps(event),
                int(self.ttl_seconds * 1000),
                int(self.availability_ttl_seconds * 1000),
                len(stock) // 2,
                *stock,
            ],
        )
        return event

    async def _from_cache(
        self, raw: bytes, avail: dict[bytes, bytes], avail_key: str, load_availability: AvailabilityLoader
    ) -> dict[str, Any] | None:
        event: dict[str, Any] | None = orjson.loads(raw)
        if event is None:  # known to be absent (a short-lived entry)
            return None
        types = event.get("ticket_types", [])
        cached = {k.decode(): int(v) for k, v in avail.items()}
        if any(str(t["ticket_type_id"]) not in cached for t in types):
            metrics.CACHE_REQUESTS.labels(cache="availability", result="miss").inc()
            metrics.CACHE_LOADS.labels(cache="availability").inc()
            cached = await load_availability()
            if cached:
                pipe = self.redis.pipeline(transaction=True)
                pipe.hset(avail_key, mapping=cached)  # type: ignore[arg-type]
                pipe.pexpire(avail_key, int(self.availability_ttl_seconds * 1000))
                await pipe.execute()
        elif types:
            metrics.CACHE_REQUESTS.labels(cache="availability", result="hit").inc()
        for t in types:
            t["available"] = max(int(cached.get(str(t["ticket_type_id"]), t["available"])), 0)
        return event


def make_cache(redis: aioredis.Redis, settings: Settings) -> EventCache:
    return EventCache(
        redis,
        Names(settings.prefix),
        ttl_seconds=settings.event_cache_ttl_seconds,
        availability_ttl_seconds=settings.availability_cache_ttl_seconds,
    )
