"""Rate limits at the edge: a fixed window per (route group, client), counted in each process and added to a
shared count in Redis, so every gateway process sees every process's hits. While Redis is unreachable each
process counts alone with the same numbers (a limit that holds per process rather than none at all);
docs/SECURITY.md lists the groups, the values and why.

A request costs no Redis round trip: it is counted in memory against the last shared count Redis returned for
its key plus this process's hits since, and a background sync adds the new hits to Redis for every key at once
(one pipelined round trip per ``SYNC_SECONDS``, however many requests) and reads back the shared counts. With one
gateway process the limit is exact; with several, a client can pass it by at most what the other processes let
through in one sync interval before the counts meet.

The window is fixed, not sliding: a client can send up to twice the limit across a window boundary, which is
acceptable for shedding abuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from fastapi import Request

from services.gateway.problems import Problem
from shared import logs
from shared.topology import Names

log = logs.get_logger(__name__)

REDIS_TIMEOUT_SECONDS = 0.25  # a slow Redis must not hold a sync longer than this
REDIS_RETRY_SECONDS = 1.0  # after a failure, count locally this long before trying Redis again
SYNC_SECONDS = 0.05  # how often this process's new hits are added to the shared counts (while there are any)
PRUNE_SECONDS = 10.0  # how often the windows that are over are forgotten


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    # True when neither Redis nor the local table could count this request (the route's policy decides).
    uncounted: bool = False


@dataclass
class _Count:
    """One client's window in one route group, as this process knows it."""

    bucket: int
    window: int
    shared: int = 0  # the count Redis last returned: every process's hits it had been told of
    unsynced: int = 0  # this process's hits not yet added to Redis


@dataclass
class Limiter:
    redis: aioredis.Redis
    names: Names
    local_max_keys: int = 100_000
    sync_seconds: float = SYNC_SECONDS
    _counts: dict[tuple[str, str], _Count] = field(default_factory=dict)
    _unsynced: dict[tuple[str, str], _Count] = field(default_factory=dict)  # counts with hits to add to Redis
    _pruned_at: float = 0.0
    _redis_down_until: float = 0.0
    _sync_task: asyncio.Task[None] | None = None
    _local: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # since-first, Redis down

    async def hit(self, group: str, client: str, limit: int, window: int) -> Decision:
        now = time.time()
        bucket = int(now // window)
        retry_after = max(1, math.ceil((bucket + 1) * window - now))
        count = self._count(group, client, bucket, window, now)
        if count is None:  # more clients in this window than the table holds: ask Redis for this one
            count = await self._redis_count(group, client, bucket, window)
            if count is None:
                return Decision(True, retry_after, uncounted=True)
            return Decision(count <= limit, retry_after)
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_soon())
        return Decision(count <= limit, retry_after)

    def _count(self, group: str, client: str, bucket: int, window: int, now: float) -> int | None:
        key = (group, client)
        entry = self._counts.get(key)
        if entry is None or entry.bucket != bucket:
            if entry is None and len(self._counts) >= self.local_max_keys:
                self._prune(now)  # drop the windows that are over before refusing to track a new client
                if len(self._counts) >= self.local_max_keys:
                    return None
            entry = self._counts[key] = _Count(bucket, window)
        entry.unsynced += 1
        self._unsynced[key] = entry
        return entry.shared + entry.unsynced

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        for stale in [k for k, c in self._counts.items() if c.bucket != int(now // c.window)]:
            del self._counts[stale]

    async def _redis_count(self, group: str, client: str, bucket: int, window: int) -> int | None:
        if time.monotonic() < self._redis_down_until:
            return None
        key = self.names.redis_key("ratelimit", group, client, str(bucket))
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                pipe = self.redis.pipeline(transaction=False)
                pipe.incr(key)
                pipe.expire(key, window + 1)
                count, _ = await pipe.execute()
            return int(count)
        except Exception as exc:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            log.warning("rate_limit_redis_unreachable", error=type(exc).__name__)
            return None

    async def hit_since_first(self, group: str, client: str, limit: int, window: int) -> Decision:
        """A window that starts at the client's first counted request (not at a clock boundary): at most
        ``limit`` requests in any ``window`` seconds after it, for rare actions where a fixed window's double
        burst at its boundary matters (e.g. 3 resent emails an hour). Per process while Redis is down."""
        count, retry_after = await self._redis_count_since_first(group, client, window)
        if count is None:
            now = time.time()
            retry_after = max(1, math.ceil((int(now // window) + 1) * window - now))
            count = self._local_count(group, client, int(now // window))
            if count is None:
                return Decision(True, retry_after, uncounted=True)
        return Decision(count <= limit, retry_after)

    async def _redis_count_since_first(self, group: str, client: str, window: int) -> tuple[int | None, int]:
        if time.monotonic() < self._redis_down_until:
            return None, window
        key = self.names.redis_key("ratelimit", group, client)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                pipe = self.redis.pipeline(transaction=True)
                pipe.set(key, 0, ex=window, nx=True)
                pipe.incr(key)
                pipe.pttl(key)
                _, count, pttl = await pipe.execute()
            return int(count), max(1, math.ceil(int(pttl) / 1000))
        except Exception as exc:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            log.warning("rate_limit_redis_unreachable", error=type(exc).__name__)
            return None, window

    def _local_count(self, group: str, client: str, bucket: int) -> int | None:
        """A since-first window counted in this process alone (Redis down): per clock window, bounded."""
        key = (group, client)
        seen_bucket, count = self._local.get(key, (bucket, 0))
        count = count + 1 if seen_bucket == bucket else 1
        if key not in self._local and len(self._local) >= self.local_max_keys:
            # Drop the windows that are over before refusing to track a new client.
            for stale in [k for k, (b, _) in self._local.items() if b != bucket]:
                del self._local[stale]
            if len(self._local) >= self.local_max_keys:
                return None
        self._local[key] = (bucket, count)
        return count

    async def _sync_soon(self) -> None:
        await asyncio.sleep(self.sync_seconds)
        await self.sync()

    async def sync(self) -> None:
        """Add this process's new hits to the shared counts, and read those back (one pipelined round trip)."""
        now = time.time()
        if now - self._pruned_at >= PRUNE_SECONDS:
            self._prune(now)
        if time.monotonic() < self._redis_down_until or not self._unsynced:
            return
        batch = [(key, c, c.unsynced) for key, c in self._unsynced.items() if c.unsynced]
        self._unsynced = {}
        pipe = self.redis.pipeline(transaction=False)
        for (group, client), c, hits in batch:
            key = self.names.redis_key("ratelimit", group, client, str(c.bucket))
            pipe.incrby(key, hits)
            pipe.expire(key, c.window + 1)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                results = await pipe.execute()
        except Exception as exc:
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            log.warning("rate_limit_redis_unreachable", error=type(exc).__name__)
            for pair, c, _ in batch:  # still to add, with whatever comes meanwhile
                self._unsynced.setdefault(pair, c)
            return
        for i, (_, c, hits) in enumerate(batch):
            c.unsynced -= hits  # hits counted while the sync ran stay for the next one
            c.shared = max(c.shared, int(results[2 * i]))

    async def aclose(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task


@dataclass(frozen=True)
class Policy:
    """One route group: its setting, whom it counts (client address or token subject), and what to do when
    no count is possible (fail_closed: 503; else let the request through)."""

    group: str
    setting: str
    per_user: bool = False
    fail_closed: bool = False
    window_setting: str = "rate_limit_window_seconds"
    always: bool = False  # not covered by rate_limit_enabled (checkout has its own switch)


SEARCH = Policy("search", "rate_limit_search")
CATALOG = Policy("catalog", "rate_limit_catalog")
ORDERS = Policy("orders", "rate_limit_orders", per_user=True, fail_closed=True)
PAYMENTS = Policy("payments", "rate_limit_payments")
HEALTH = Policy("health", "rate_limit_health")
CHECKOUT = Policy(
    "checkout",
    "checkout_rate_limit",
    per_user=True,
    fail_closed=True,
    window_setting="checkout_rate_window_seconds",
    always=True,
)


def limiter(request: Request) -> Limiter:
    state = request.app.state
    if getattr(state, "limiter", None) is None:
        state.limiter = Limiter(state.redis, state.names, state.settings.rate_limit_local_max_keys)
    return state.limiter  # type: ignore[no-any-return]


def client_address(request: Request) -> str:
    # The peer address: behind a reverse proxy this is the proxy (docs/SECURITY.md: put the limits there too,
    # or run the gateway with uvicorn's --forwarded-allow-ips so that the peer is the real client).
    return request.client.host if request.client else "unknown"


async def enforce(request: Request, policy: Policy, user_id: str | None = None) -> None:
    settings: Any = request.app.state.settings
    limit = int(getattr(settings, policy.setting))
    if not limit or not (policy.always or settings.rate_limit_enabled):
        return
    if getattr(request.state, f"rate_limited_{policy.group}", False):
        return  # already counted for this request (before the body was read)
    setattr(request.state, f"rate_limited_{policy.group}", True)
    window = int(getattr(settings, policy.window_setting))
    client = f"user:{user_id}" if policy.per_user and user_id is not None else f"addr:{client_address(request)}"
    decision = await limiter(request).hit(policy.group, client, limit, window)
    refuse_unless_allowed(
        decision,
        f"at most {limit} requests per {window} s on this route",
        "too many clients to track right now; try again shortly" if policy.fail_closed else None,
    )


def refuse_unless_allowed(decision: Decision, limit_detail: str, uncounted_detail: str | None) -> None:
    """429 (with Retry-After) past the limit; 503 when the hit could not be counted and the caller fails closed
    (``uncounted_detail`` given: it says why)."""
    if decision.uncounted and uncounted_detail is not None:
        problem = Problem(503, "Service unavailable", uncounted_detail, "unavailable")
        problem.headers["Retry-After"] = str(decision.retry_after)
        raise problem
    if not decision.allowed:
        problem = Problem(429, "Too many requests", limit_detail, "rate-limited", retry_after=decision.retry_after)
        problem.headers["Retry-After"] = str(decision.retry_after)
        raise problem


class RateLimit:
    """A route dependency: ``dependencies=[Depends(RateLimit(SEARCH))]``. Routes of the gateway's EdgeRoute
    class run it before their body is read; elsewhere it runs with the other dependencies."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def __call__(self, request: Request) -> None:
        user = getattr(request.state, "user", None)
        await enforce(request, self.policy, getattr(user, "id", None))
