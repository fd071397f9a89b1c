"""The brief's four ways to hold tickets, measured at the storage layer (no HTTP, no broker).

Each method takes `attempts` concurrent hold requests of one ticket for one ticket type of `capacity`
tickets, from `concurrency` workers, and must never hold more than the capacity:

1. counter        one conditional UPDATE of the ticket type's held counter (+ the order item) per hold
2. status rows    one row per ticket, AVAILABLE -> HELD, picked with FOR UPDATE SKIP LOCKED
3. redis          an atomic Lua check-and-decrement plus a TTL key per hold (no database write)
4. order items    lock the ticket type, SUM the pending/paid order items, insert the item
5. counter, batch what we ship: method 1 with group commit (one transaction for all waiting requests)

    .venv/bin/python -m bench.hold_methods [--attempts 4000] [--capacity 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from shared.batching import GroupCommit
from shared.db import create_database_if_missing, drop_database
from shared.settings import Settings

console = Console(width=150)

SCHEMA = """
CREATE TABLE tt (id int PRIMARY KEY, capacity int NOT NULL, held int NOT NULL DEFAULT 0, sold int NOT NULL DEFAULT 0,
                 CHECK (held + sold <= capacity));
CREATE TABLE items (order_id uuid PRIMARY KEY, tt int NOT NULL, quantity int NOT NULL, status text NOT NULL);
CREATE INDEX items_tt ON items (tt, status);
CREATE TABLE tickets (id serial PRIMARY KEY, tt int NOT NULL, status text NOT NULL, order_id uuid);
CREATE INDEX tickets_available ON tickets (tt) WHERE status = 'AVAILABLE';
"""

REDIS_HOLD = """
local available = tonumber(redis.call('GET', KEYS[1]) or '0')
if available < tonumber(ARGV[1]) then return 0 end
redis.call('DECRBY', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
"""

Hold = Callable[[], Awaitable[bool]]


async def reset(pool: asyncpg.Pool, capacity: int) -> None:
    async with pool.acquire() as c:
        await c.execute("TRUNCATE tt, items, tickets")
        await c.execute("INSERT INTO tt (id, capacity) VALUES (1, $1)", capacity)
        await c.execute("INSERT INTO tickets (tt, status) SELECT 1, 'AVAILABLE' FROM generate_series(1, $1)", capacity)


def counter(pool: asyncpg.Pool) -> Hold:
    async def hold() -> bool:
        async with pool.acquire() as c, c.transaction():
            await c.execute("INSERT INTO items VALUES ($1, 1, 1, 'PENDING')", uuid.uuid4())
            ok = await c.fetchval(
                "UPDATE tt SET held = held + 1 WHERE id = 1 AND held + sold + 1 <= capacity RETURNING 1"
            )
            if not ok:
                raise _Rollback
            return True

    return _rollback_is_false(hold)


def status_rows(pool: asyncpg.Pool) -> Hold:
    async def hold() -> bool:
        async with pool.acquire() as c, c.transaction():
            got = await c.fetchval(
                "UPDATE tickets SET status = 'HELD', order_id = $1 WHERE id = (SELECT id FROM tickets "
                "WHERE tt = 1 AND status = 'AVAILABLE' LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
                uuid.uuid4(),
            )
            return got is not None

    return hold


def redis_gate(r: aioredis.Redis, prefix: str) -> Hold:
    script = r.register_script(REDIS_HOLD)

    async def hold() -> bool:
        return bool(await script(keys=[f"{prefix}available", f"{prefix}hold:{uuid.uuid4().hex}"], args=[1, 900]))

    return hold


def order_items(pool: asyncpg.Pool) -> Hold:
    async def hold() -> bool:
        async with pool.acquire() as c, c.transaction():
            capacity = await c.fetchval("SELECT capacity FROM tt WHERE id = 1 FOR UPDATE")
            taken = await c.fetchval(
                "SELECT COALESCE(SUM(quantity), 0) FROM items WHERE tt = 1 AND status IN ('PENDING', 'PAID')"
            )
            if taken + 1 > capacity:
                return False
            await c.execute("INSERT INTO items VALUES ($1, 1, 1, 'PENDING')", uuid.uuid4())
            return True

    return hold


def counter_batched(pool: asyncpg.Pool) -> tuple[Hold, GroupCommit[int, bool]]:
    async def process(quantities: Sequence[int], _: Sequence[str]) -> list[bool]:
        async with pool.acquire() as c, c.transaction():
            row = await c.fetchrow("SELECT capacity, held, sold FROM tt WHERE id = 1 FOR UPDATE")
            free = row["capacity"] - row["held"] - row["sold"]
            results = []
            for q in quantities:
                results.append(free >= q)
                free -= q if free >= q else 0
            held = sum(q for q, ok in zip(quantities, results, strict=True) if ok)
            if held:
                await c.executemany(
                    "INSERT INTO items VALUES ($1, 1, $2, 'PENDING')",
                    [(uuid.uuid4(), q) for q, ok in zip(quantities, results, strict=True) if ok],
                )
                await c.execute("UPDATE tt SET held = held + $1 WHERE id = 1", held)
            return results

    group: GroupCommit[int, bool] = GroupCommit("bench", process, max_batch=256)

    async def hold() -> bool:
        return await group.submit(1)

    return hold, group


class _Rollback(Exception):
    pass


def _rollback_is_false(fn: Hold) -> Hold:
    async def wrapped() -> bool:
        try:
            return await fn()
        except _Rollback:
            return False

    return wrapped


async def run(hold: Hold, attempts: int, concurrency: int) -> tuple[float, int, float]:
    todo = iter(range(attempts))
    held = 0
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal held
        for _ in todo:
            t = time.perf_counter()
            ok = await hold()  # not `held += await ...`: that reads `held` before the await
            held += ok
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    return attempts / (time.perf_counter() - started), held, latencies[int(0.99 * len(latencies))] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=4000)
    parser.add_argument("--capacity", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    settings = Settings()
    url = make_url(settings.database_url).set(database=f"ticketing_bench_{uuid.uuid4().hex[:8]}")
    await create_database_if_missing(url.render_as_string(hide_password=False))
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    pool = await asyncpg.create_pool(dsn, min_size=args.concurrency, max_size=args.concurrency)
    r = aioredis.from_url(settings.redis_url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    try:
        async with pool.acquire() as c:
            await c.execute(SCHEMA)
        batched, group = counter_batched(pool)
        group.start()
        methods: dict[str, Hold] = {
            "1. counter (one UPDATE per hold)": counter(pool),
            "2. status rows (SKIP LOCKED)": status_rows(pool),
            "3. redis (Lua check-and-decrement)": redis_gate(r, prefix),
            "4. pending order items (SUM)": order_items(pool),
            "5. counter + group commit (shipped)": batched,
        }
        table = Table(
            title=f"Hold methods: {args.attempts} holds for {args.capacity} tickets of one type, "
            f"{args.concurrency} concurrent workers"
        )
        for col in ("method", "attempts/s", "vs counter", "p99 ms", "held", "oversold"):
            table.add_column(col, justify="right")
        base = 0.0
        for name, hold in methods.items():
            await reset(pool, args.capacity)
            await r.set(f"{prefix}available", args.capacity)
            rate, held, p99 = await run(hold, args.attempts, args.concurrency)
            base = base or rate
            table.add_row(
                name, f"{rate:.0f}", f"{rate / base:.2f}x", f"{p99:.1f}", str(held), str(max(0, held - args.capacity))
            )
        await group.stop()
        console.print(table)
    finally:
        async for key in r.scan_iter(match=f"{prefix}*", count=1000):
            await r.delete(key)
        await r.aclose()
        await pool.close()
        await drop_database(url.render_as_string(hide_password=False))


if __name__ == "__main__":
    asyncio.run(main())
