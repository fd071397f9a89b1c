"""Rate limits at the edge: a fixed window per (route group, client) counted in Redis, so every gateway process
shares one count. While Redis is unreachable each process counts in memory with the same numbers (a limit that
holds per process rather than none at all); docs/SECURITY.md lists the groups, the values and why.

The window is fixed, not sliding: a client can send up to twice the limit across a window boundary, which is
acceptable for shedding abuse and costs one pipelined round trip (INCR + EXPIRE) per request.
"""

from __future__ import annotations

import asyncio
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

REDIS_TIMEOUT_SECONDS = 0.25  # a slow Redis must not add more than this to a request
REDIS_RETRY_SECONDS = 1.0  # after a failure, count locally this long before trying Redis again


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0
    # True when neither Redis nor the local table could count this request (the route's policy decides).
    uncounted: bool = False


@dataclass
class Limiter:
    redis: aioredis.Redis
    names: Names
    local_max_keys: int = 100_000
    _local: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    _redis_down_until: float = 0.0

    async def hit(self, group: str, client: str, limit: int, window: int) -> Decision:
        now = time.time()
        bucket = int(now // window)
        retry_after = max(1, math.ceil((bucket + 1) * window - now))
        count = await self._redis_count(group, client, bucket, window)
        if count is None:
            count = self._local_count(group, client, bucket)
            if count is None:
                return Decision(True, retry_after, uncounted=True)
        return Decision(count <= limit, retry_after)

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
