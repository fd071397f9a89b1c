"""Event-detail cache, hit path: what one look at the cache costs, a pipeline against the LOOK script.

``GET /events/{id}`` looks at the cache once per request. A hit is a pipeline (``GET`` detail + ``HGETALL``
availability); only a miss runs the ``LOOK`` script (``shared/search_index/cache.py``), which looks again and
takes the rebuild lock in the same step. The stampede fix first ran the script on every look; this measured
what that cost and is why hits stay on the pipeline. It compares the looks on hits against the configured
Redis, in the same run, alternating the variants round by round: calls per second with N in flight, the
client's CPU per call (this process) and Redis's own CPU per call (``INFO cpu``, so it includes anything else
the shared server did meanwhile). The entry is a real event's detail (3 ticket types) under a prefix of the
run's own, deleted at the end.

    .venv/bin/python -m bench.event_cache [--calls 20000] [--concurrency 1 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from shared.search_index.cache import EventCache
from shared.settings import Settings
from shared.topology import Names

Look = Callable[[], Awaitable[object]]


def detail(event_id: str) -> dict[str, object]:
    types = [
        {"ticket_type_id": str(uuid.uuid4()), "name": n, "price": p, "capacity": 500, "per_user_limit": 4}
        for n, p in [("Thường", 300_000), ("VIP", 800_000), ("Phổ thông", 150_000)]
    ]
    return {
        "event_id": event_id,
        "title": "Đêm nhạc Trịnh Công Sơn — Hà Nội mùa thu",
        "venue": "Nhà hát Lớn",
        "city": "Hà Nội",
        "starts_at": "2030-01-01T19:30:00+07:00",
        "description": "Những tình khúc bất hủ. " * 20,
        "hold_seconds": 900,
        "status": "ON_SALE",
        "ticket_types": [{**t, "available": 500} for t in types],
    }


async def redis_cpu(r: aioredis.Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def run(look: Look, calls: int, concurrency: int, r: aioredis.Redis) -> tuple[float, float, float]:
    """calls/s, client CPU µs per call, Redis CPU µs per call."""
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await look()

    server_before, cpu_before, started = await redis_cpu(r), time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    server = await redis_cpu(r) - server_before
    done = per_worker * concurrency
    return done / elapsed, cpu / done * 1e6, server / done * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    settings = Settings()  # type: ignore[call-arg]
    r = aioredis.from_url(settings.redis_url, max_connections=max(args.concurrency) + 8)
    prefix = f"bench-cache-{uuid.uuid4().hex[:8]}."
    cache = EventCache(r, Names(prefix))
    event_id = str(uuid.uuid4())
    body = detail(event_id)
    availability = {str(t["ticket_type_id"]): 500 for t in body["ticket_types"]}  # type: ignore[attr-defined]
    detail_key, _, lock_key, avail_key = cache._keys(event_id)
    await r.set(detail_key, orjson.dumps(body))
    await r.hset(avail_key, mapping=availability)  # type: ignore[arg-type]

    async def pipeline() -> object:  # a hit's look: GET + HGETALL in one round trip
        pipe = r.pipeline(transaction=False)
        pipe.get(detail_key)
        pipe.hgetall(avail_key)
        return await pipe.execute()

    async def script() -> object:  # the LOOK script on a hit, asking for the lock as a miss does
        return await cache._look_up(detail_key, lock_key, avail_key, uuid.uuid4().hex, claim=True)

    async def get_event() -> object:  # the whole hit as the gateway runs it (JSON decode, availability overlay)
        async def never() -> None:
            raise AssertionError("a hit never loads")

        return await cache.get_event(event_id, never, never)  # type: ignore[arg-type]

    variants: dict[str, Look] = {"pipeline": pipeline, "LOOK script (tried)": script, "get_event hit": get_event}
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for look in variants.values():  # warm-up: connections, the script cached on the server
            await run(look, 500, max(args.concurrency), r)
        for _ in range(args.rounds):
            for c in args.concurrency:
                for name, look in variants.items():
                    results.setdefault((name, c), []).append(await run(look, args.calls, c, r))
    finally:
        async for key in r.scan_iter(match=f"{prefix}*", count=1000):
            await r.unlink(key)
        await r.aclose()

    def mmm(xs: list[float], fmt: str) -> str:
        return " / ".join(format(x, fmt) for x in (min(xs), statistics.median(xs), max(xs)))

    table = Table(
        title=f"Event-detail cache hit: {args.calls:,} calls per round, {args.rounds} rounds, min / median / max "
        f"({platform.node()}, Python {platform.python_version()})"
    )
    for col in ("look", "in flight", "calls/s", "client CPU µs/call", "Redis CPU µs/call", "calls/s vs pipeline"):
        table.add_column(col, justify="right")
    for (name, c), rows in results.items():
        rates = [x[0] for x in rows]
        base = statistics.median(x[0] for x in results[("pipeline", c)])
        table.add_row(
            name,
            str(c),
            mmm(rates, ",.0f"),
            mmm([x[1] for x in rows], ".1f"),
            mmm([x[2] for x in rows], ".1f"),
            f"{statistics.median(rates) / base:.2f}x",
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    asyncio.run(main())
