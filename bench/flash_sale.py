"""Flash-sale benchmark: one ticket type, end to end over HTTP, two hold methods side by side.

For each hold method the whole stack is started on its own database and prefix; for each concurrency level
a fresh ticket type takes a burst of checkouts from distinct buyers. Printed: decided checkouts per second,
latency percentiles, oversell, and hold-release lateness (from expires_at to the stock being back).

    .venv/bin/python -m bench.flash_sale [--attempts 3000] [--tickets 1000] [--concurrency 16 64 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from dataclasses import dataclass

import aiohttp
import asyncpg
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from shared.db import create_database_if_missing, drop_database
from shared.migrate import upgrade
from shared.settings import Settings, get_settings
from tests.harness import Stack, run_environment
from ticketing.supervisor import Supervisor

console = Console(width=150)
METHODS = {
    "counter": {"TICKETING_HOLD_METHOD": "counter"},
    "order_items": {"TICKETING_HOLD_METHOD": "order_items"},
    "counter_unbatched": {"TICKETING_HOLD_METHOD": "counter", "TICKETING_HOLD_BATCH_MAX": "1"},
}


@dataclass
class Run:
    method: str
    concurrency: int
    decided: int
    seconds: float
    p50: float
    p95: float
    p99: float
    held_tickets: int
    oversold: int
    errors: int


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else 0.0


async def burst(stack: Stack, session: aiohttp.ClientSession, method: str, concurrency: int, attempts: int,
                tickets: int) -> Run:
    event = await stack.create_event(capacity=tickets, per_user_limit=10_000, title=f"bench {method} {concurrency}")
    tt = event["ticket_types"][0]["ticket_type_id"]
    tokens = [stack.token(f"bench-buyer-{i}") for i in range(min(attempts, 2000))]
    latencies: list[float] = []
    codes: dict[int, int] = {}
    next_attempt = iter(range(attempts))
    body = {"items": [{"ticket_type_id": tt, "quantity": 1}]}

    async def worker() -> None:
        for i in next_attempt:
            started = time.perf_counter()
            async with session.post("/checkout", json=body,
                                    headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"}) as r:
                await r.read()
                codes[r.status] = codes.get(r.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    capacity, held, sold = await stack.stock(tt)
    return Run(method, concurrency, codes.get(201, 0) + codes.get(409, 0), seconds, pct(latencies, .5) * 1000,
               pct(latencies, .95) * 1000, pct(latencies, .99) * 1000, codes.get(201, 0),
               max(0, held + sold - capacity) + max(0, codes.get(201, 0) - tickets),
               sum(n for c, n in codes.items() if c not in (201, 409)))


async def release_lateness(stack: Stack, session: aiohttp.ClientSession, holds: int) -> list[float]:
    """Place `holds` 2-second holds at once and measure how late each comes back."""
    event = await stack.create_event(capacity=holds, per_user_limit=10_000, hold_seconds=2, title="bench expiry")
    tt = event["ticket_types"][0]["ticket_type_id"]
    token = stack.token("bench-expiry")
    sem = asyncio.Semaphore(64)

    async def hold() -> None:
        async with sem, session.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]},
                                     headers={"Authorization": f"Bearer {token}"}) as r:
            await r.read()

    await asyncio.gather(*(hold() for _ in range(holds)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, held, _ = await stack.stock(tt)
        if held == 0:
            break
        await asyncio.sleep(0.1)
    rows = await stack.db.fetch(
        "SELECT EXTRACT(EPOCH FROM o.updated_at - o.expires_at) AS late FROM inventory.orders o "
        "JOIN inventory.order_items i ON i.order_id = o.id WHERE i.ticket_type_id = $1 AND o.status = 'EXPIRED'",
        uuid.UUID(tt))
    return sorted(float(r["late"]) for r in rows)


async def bench_method(
    method: str, extra_env: dict[str, str], args: argparse.Namespace
) -> tuple[list[Run], list[float]]:
    env = {**run_environment(Settings()), **extra_env, "TICKETING_CHECKOUT_WAIT_SECONDS": "30",
           "TICKETING_SWEEPER_INTERVAL_SECONDS": "30",
           "TICKETING_SMTP_HOST": ""}  # the mailer's embedded sink takes the expiry notices
    os.environ.update({k: v for k, v in env.items() if k.startswith("TICKETING_")})
    get_settings.cache_clear()
    settings = get_settings()
    await create_database_if_missing(settings.database_url)
    upgrade(settings.database_url)
    sup = Supervisor(env=env, quiet=not args.verbose, restart=False)
    sup.start()
    dsn = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    import aio_pika

    amqp = await aio_pika.connect_robust(settings.rabbitmq_url)
    stack = Stack(env=env, settings=settings, base_url=f"http://127.0.0.1:{settings.gateway_port}", db=db,
                  amqp=amqp, supervisor=sup)
    runs: list[Run] = []
    try:
        await stack.wait_ready()
        async with aiohttp.ClientSession(stack.base_url, connector=aiohttp.TCPConnector(limit=512)) as session:
            await burst(stack, session, method, 8, 200, 100)  # warm-up: connections, prepared statements
            for c in args.concurrency:
                runs.append(await burst(stack, session, method, c, args.attempts, args.tickets))
                console.print(f"  {method:12} c={c:<4} {runs[-1].decided / runs[-1].seconds:7.0f} decided/s")
        async with aiohttp.ClientSession(stack.base_url, connector=aiohttp.TCPConnector(limit=64)) as session:
            lateness = await release_lateness(stack, session, args.expiry_holds)
        return runs, lateness
    finally:
        sup.stop()
        await stack.cleanup_broker((2, 900))
        await amqp.close()
        await db.close()
        await drop_database(settings.database_url)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=3000)
    parser.add_argument("--tickets", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--expiry-holds", type=int, default=500)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--verbose", action="store_true", help="show the services' logs")
    args = parser.parse_args()
    results: dict[str, tuple[list[Run], list[float]]] = {}
    for method in args.methods:
        console.print(f"[bold]{method}[/bold]: starting the stack")
        results[method] = await bench_method(method, METHODS[method], args)

    table = Table(title=f"Flash sale: {args.attempts} checkouts for {args.tickets} tickets of one type "
                        f"({os.cpu_count()} cores, {platform.python_version()})")
    for col in ("hold method", "buyers", "decided/s", "vs counter", "p50 ms", "p95 ms", "p99 ms", "held",
                "oversold", "errors"):
        table.add_column(col, justify="right")
    base = {r.concurrency: r.decided / r.seconds for r in results.get("counter", ([], []))[0]}
    for method, (runs, _) in results.items():
        for r in runs:
            rate = r.decided / r.seconds
            ratio = f"{rate / base[r.concurrency]:.2f}x" if r.concurrency in base else "-"
            table.add_row(method, str(r.concurrency), f"{rate:.0f}", ratio, f"{r.p50:.1f}", f"{r.p95:.1f}",
                          f"{r.p99:.1f}", str(r.held_tickets), str(r.oversold), str(r.errors))
    console.print(table)
    late = Table(title=f"Hold-release lateness ({args.expiry_holds} holds of 2 s expiring together)")
    for col in ("hold method", "released", "p50 ms", "p99 ms", "max ms"):
        late.add_column(col, justify="right")
    for method, (_, lateness) in results.items():
        ms = [x * 1000 for x in lateness]
        late.add_row(method, str(len(ms)), f"{pct(ms, .5):.0f}", f"{pct(ms, .99):.0f}", f"{max(ms, default=0):.0f}")
    console.print(late)


if __name__ == "__main__":
    asyncio.run(main())
