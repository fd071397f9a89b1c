"""Email benchmark: how many ticket emails per second are rendered and delivered to a local SMTP sink, and
what the retry path adds to an email's latency.

    .venv/bin/python -m bench.email_bench [--emails 300] [--concurrency 16] [--retry-samples 20]

1. In process: render only; render + SMTP delivery (one connection per email, as the mailer does), sequential
   and with N sends in flight.
2. Through the service: a real mailer process (own database and queue prefix, like the tests) consuming
   order.paid from RabbitMQ, claiming in PostgreSQL, delivering to the sink: emails/s and latency.
3. The retry path: the same, with the sink answering 451 to each email's first attempt (ladder 1 s, 2 s, 3 s):
   latency with one retry minus latency without = the added latency of one retry step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import httpx
from rich.console import Console
from rich.table import Table

from services.mailer import domain
from services.mailer.render import render
from services.mailer.sender import SmtpConfig, SmtpSender
from shared.db import create_database_if_missing, drop_database
from shared.migrate import upgrade
from shared.settings import Settings
from shared.topology import Names, all_queue_names, mailer_notifications
from tests.harness import eventually, free_port, not_ready_reason, run_environment
from tests.mailer_support import paid_order
from tests.smtp_server import ScriptedSmtpServer

console = Console()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else values[0]


async def timed(n: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await job(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started


async def in_process(n: int, concurrency: int, sink: ScriptedSmtpServer, port: int) -> list[tuple[str, str]]:
    specs = [domain.for_paid(paid_order(f"bench{i}@example.com", tickets=2)) for i in range(n)]
    started = time.perf_counter()
    for spec in specs:
        render(spec, "bench@example.com")
    render_rate = n / (time.perf_counter() - started)
    config = SmtpConfig(
        host="127.0.0.1", port=port, tls="none", username="", password="", timeout=30, sender="bench@example.com"
    )
    sender = SmtpSender(config)

    async def deliver(i: int) -> None:
        spec = specs[i]
        await sender.send(render(spec, config.sender), spec.recipient)

    seq = await timed(n, 1, deliver)
    par = await timed(n, concurrency, deliver)
    assert len(sink.handler.received) == 2 * n
    return [
        ("render only (2 tickets, 2 QR PNGs)", f"{render_rate:,.0f} emails/s"),
        ("render + SMTP, sequential", f"{n / seq:,.0f} emails/s ({seq / n * 1000:.1f} ms each)"),
        (f"render + SMTP, {concurrency} in flight", f"{n / par:,.0f} emails/s"),
    ]


async def through_service(n: int, retry_samples: int) -> list[tuple[str, str]]:
    base = Settings()
    env = run_environment(base)
    env.update({"TICKETING_INVENTORY_PORT": "0", "TICKETING_LOG_LEVEL": "ERROR"})
    settings = Settings.model_validate(
        {
            **{
                k.removeprefix("TICKETING_").lower(): v
                for k, v in env.items()
                if k.startswith("TICKETING_") and k != "TICKETING_MAILER_RETRY_DELAYS"
            },
            "mailer_retry_delays": (1, 2, 3),
        }
    )
    sink = ScriptedSmtpServer(settings.smtp_port)
    sink.start()
    await create_database_if_missing(settings.database_url)
    upgrade(settings.database_url)
    names = Names(settings.prefix)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.mailer", env=env)
    conn = await aio_pika.connect(settings.rabbitmq_url)
    try:
        channel = await conn.channel(publisher_confirms=True)

        # Ready means bound and consuming: the queue alone exists a moment before its bindings, and an
        # order.paid published then is dropped as unroutable (a run once waited for ever on it).
        async def mailer_ready() -> bool:
            async with httpx.AsyncClient(timeout=2) as client:
                return await not_ready_reason(client, settings.mailer_port) is None

        await eventually(mailer_ready, timeout=60, what="the mailer ready (/readyz)")
        exchange = await channel.get_exchange(names.events_exchange)

        async def send_batch(count: int, tag: str, first_answer: str | None) -> list[float]:
            orders = [paid_order(f"{tag}{i}@example.com", tickets=2) for i in range(count)]
            if first_answer:
                for o in orders:
                    sink.handler.script(o.user_email, [first_answer])
            sent_at: dict[str, float] = {}
            for o in orders:
                sent_at[o.user_email] = time.perf_counter()
                await exchange.publish(
                    aio_pika.Message(
                        o.model_dump_json().encode(),
                        message_id=f"paid:{o.order_id}",
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key="order.paid",
                )
            done: dict[str, float] = {}

            async def all_delivered() -> bool:
                for o in orders:
                    if o.user_email not in done and sink.handler.to(o.user_email):
                        done[o.user_email] = time.perf_counter()
                return len(done) == count

            await eventually(all_delivered, timeout=300, interval=0.005, what=f"{tag} delivered")
            return [done[k] - sent_at[k] for k in done]

        await send_batch(10, "warm", None)
        started = time.perf_counter()
        lat = await send_batch(n, "bulk", None)
        rate = n / (time.perf_counter() - started)
        plain = await send_batch(retry_samples, "plain", None)  # one at a time is not needed: few, no backlog
        retried = await send_batch(retry_samples, "retry", "451 4.3.0 try again later")
        added = statistics.median(retried) - statistics.median(plain)
        return [
            (
                f"through the mailer service ({n} order.paid, prefetch {settings.mailer_prefetch})",
                f"{rate:,.0f} emails/s; latency p50 {pct(lat, 50) * 1000:.0f} ms, p95 {pct(lat, 95) * 1000:.0f} ms "
                "(includes the backlog)",
            ),
            (f"latency, no failure ({retry_samples} emails)", f"p50 {statistics.median(plain) * 1000:.0f} ms"),
            (
                "latency, first attempt 451 (1 s retry step)",
                f"p50 {statistics.median(retried) * 1000:.0f} ms, max {max(retried) * 1000:.0f} ms",
            ),
            ("added latency of one retry step", f"{added * 1000:.0f} ms (TTL 1000 ms + {added * 1000 - 1000:.0f} ms)"),
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
        cleanup = await conn.channel()
        for name in all_queue_names(names, extra=(mailer_notifications((1, 2, 3)),)):
            try:
                await cleanup.queue_delete(name)
            except Exception:
                cleanup = await conn.channel()
        with contextlib.suppress(Exception):
            await cleanup.exchange_delete(names.events_exchange)
        await conn.close()
        sink.stop()
        await drop_database(settings.database_url)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--retry-samples", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    sink = ScriptedSmtpServer(port)
    sink.start()
    try:
        rows: list[tuple[str, Any]] = await in_process(args.emails, args.concurrency, sink, port)
    finally:
        sink.stop()
    rows += await through_service(args.emails, args.retry_samples)
    table = Table(
        "measure",
        "result",
        title=f"Email benchmark ({platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()})",
    )
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    asyncio.run(main())
