"""Flash-sale benchmark: issue 10's shapes, end to end over HTTP, every service running.

The whole stack (gateway, inventory, payment, mailer, ops, search, payment simulator: one process each) is
started once on its own database and queue prefix; every shape of every round gets a fresh ticket type.
Shapes (``--shapes``, comma-separated):

- ``rush``: 2,000 attempts for 100 tickets, 50 buyers at once, one ticket each: responses/s, latency, and
  exactly 100 held (the oversell check);
- ``holds``: uncontended holds (capacity = attempts) at 16 and at 64 at once: orders/s, latency;
- ``mix``: 3,000 attempts for 1,000 tickets at 64 at once (``make bench``'s shape before issue 10): decided/s;
- ``release``: N holds (default 1,000) that expire in the same second: lateness from ``expires_at`` to the
  order being EXPIRED with its stock back (polled from the database), and the inventory's own
  ``ticketing_hold_release_lateness_seconds`` histogram. Holds placed in second k of the placement go to a
  ticket type whose hold lasts k seconds less, so they all expire within one second of each other.

Each round runs every chosen shape; figures are printed per round and as min / median / max over the rounds.
Beside each figure: the load generator's own ceiling, measured in the same round at the same concurrency
against a null HTTP server in a process of its own (``ticketing/loadgen.py``: the client's own ceiling), and
CPU milliseconds per decision for each
process (see ``bench/cpu.py``).

    .venv/bin/python -m bench.flash_sale [--shapes rush,holds,mix,release] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import psutil
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from bench.cpu import SERVICE_ORDER, CpuMeter, CpuWindow
from shared.db import create_database_if_missing, drop_database
from shared.migrate import upgrade
from shared.settings import Settings, get_settings
from tests.harness import Stack, run_environment
from ticketing import loadgen
from ticketing.loadgen import HttpError, HttpPool, client_ceiling
from ticketing.supervisor import Supervisor, parse_scale

console = Console(width=200)
SHAPES = ("rush", "holds", "mix", "release")
DEFAULT_SHAPES = "rush,holds,mix"  # `make bench` (about 5 minutes); add release for issue 10's fourth shape
LONG_HOLD_SECONDS = 900


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else 0.0


@dataclass
class ShapeResult:
    shape: str
    label: str  # shape and concurrency, e.g. "holds c=64"
    round: int
    attempts: int
    concurrency: int
    seconds: float
    figure: str  # what ``rate`` counts: responses/s, orders/s, decided/s, releases/s
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    codes: dict[str, int]
    tickets: int
    held: int
    oversold: int
    errors: int
    decisions: int  # the denominator of the CPU figures
    ceiling_rps: float
    cpu_ms_per_decision: dict[str, float]
    cpu_core_share: dict[str, float]
    cpu_window_s: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Load:
    seconds: float
    latencies: list[float]
    codes: dict[int, int]


async def closed_loop(
    pool: HttpPool,
    concurrency: int,
    attempts: int,
    request: Callable[[int], tuple[str, dict[str, Any], dict[str, str]]],
) -> Load:
    """``concurrency`` workers, each sending its next request as soon as the previous one is answered. The
    requests are encoded before the clock starts: the window measures the server, not the encoding."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    encoded = [
        pool.encode("POST", path, json_body=body, headers=headers)
        for path, body, headers in map(request, range(attempts))
    ]
    next_attempt = iter(encoded)

    async def worker() -> None:
        for raw in next_attempt:
            started = time.perf_counter()
            try:
                status = (await pool.send(raw)).status
            except HttpError:
                status = -1
            latencies.append(time.perf_counter() - started)
            codes[status] = codes.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return Load(seconds, latencies, codes)


def histogram_counts(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of one Prometheus histogram (summed over label sets)."""
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def counter_values(metrics_text: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name.removesuffix("_total"):
            continue
        for sample in family.samples:
            if sample.name == name:
                key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[key] = out.get(key, 0.0) + sample.value
    return out


def sample_values(metrics_text: str, sample_name: str, label: str) -> dict[str, float]:
    """Values of one sample name (e.g. ``ticketing_handler_seconds_count``) keyed by one label's value."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == sample_name:
                key = str(sample.labels.get(label, ""))
                out[key] = out.get(key, 0.0) + sample.value
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` of the observations made between two scrapes."""
    delta = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None
    for le, n in delta:
        if n >= q * total:
            return le
    return math.inf


def gc_pauses(before: dict[str, str], after: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per service, the garbage collector's pauses between two scrapes: how many, their total, and the upper
    bound of the bucket of the longest (``ticketing_gc_pause_seconds``, shared/heap.py)."""
    out: dict[str, dict[str, float]] = {}
    for svc, text_after in after.items():
        if not text_after:
            continue
        text_before = before.get(svc, "")
        a = histogram_counts(text_after, "ticketing_gc_pause_seconds")
        b = histogram_counts(text_before, "ticketing_gc_pause_seconds") if text_before else {}
        total = sum(sample_values(text_after, "ticketing_gc_pause_seconds_sum", "").values()) - sum(
            sample_values(text_before, "ticketing_gc_pause_seconds_sum", "").values()
        )
        count = a.get(math.inf, 0.0) - b.get(math.inf, 0.0)
        if count > 0:
            longest = bucket_quantile(b, a, 1.0)
            out[svc] = {"count": count, "total_ms": total * 1000, "longest_le_ms": (longest or 0.0) * 1000}
    return out


class Bench:
    """One stack for the whole run; shapes create their own ticket types."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.hold_seconds_used: set[int] = {LONG_HOLD_SECONDS}
        self.stack: Stack | None = None
        self.meter: CpuMeter | None = None
        self.last_hold_rate: float | None = None
        # Called just before and after each measurement window (bench/profile.py attaches py-spy here).
        self.window_hooks: list[tuple[Callable[[str], Awaitable[None]], Callable[[str], Awaitable[None]]]] = []
        self.current_label = ""
        self.last_scrapes: tuple[dict[str, str], dict[str, str]] = ({}, {})

    async def _window_started(self) -> None:
        for begin, _ in self.window_hooks:
            await begin(self.current_label)

    async def _window_ended(self) -> None:
        for _, end in self.window_hooks:
            await end(self.current_label)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Stack]:
        env = {
            **run_environment(Settings()),
            "TICKETING_CHECKOUT_WAIT_SECONDS": "30",
            "TICKETING_SMTP_HOST": "",
        }  # the mailer's embedded sink takes the expiry notices
        # Production timers, not the tests' short ones: the benchmark measures what a deployment does.
        defaults = Settings()
        env.update(
            {
                "TICKETING_SWEEPER_INTERVAL_SECONDS": str(defaults.sweeper_interval_seconds),
                "TICKETING_CHECKOUT_RATE_LIMIT": str(self.args.rate_limit),
                "TICKETING_PAYMENT_RECONCILE_INTERVAL_SECONDS": str(defaults.payment_reconcile_interval_seconds),
                "TICKETING_PAYMENT_RECONCILE_LEAD_SECONDS": str(defaults.payment_reconcile_lead_seconds),
                "TICKETING_PAYMENT_RECONCILE_WINDOW_SECONDS": str(defaults.payment_reconcile_window_seconds),
                "TICKETING_SEARCH_CHECK_INTERVAL_SECONDS": str(defaults.search_check_interval_seconds),
                "TICKETING_LOG_LEVEL": "WARNING",
            }
        )
        env.update(dict(kv.split("=", 1) for kv in self.args.env))
        os.environ.update({k: v for k, v in env.items() if k.startswith("TICKETING_")})
        get_settings.cache_clear()
        settings = get_settings()
        await create_database_if_missing(settings.database_url)
        sup: Supervisor | None = None
        db: asyncpg.Pool | None = None
        amqp: aio_pika.abc.AbstractRobustConnection | None = None
        try:
            upgrade(settings.database_url)
            sup = Supervisor(env=env, quiet=not self.args.verbose, restart=False, scale=parse_scale(self.args.scale))
            sup.start()
            url = make_url(settings.database_url)
            dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
            db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
            amqp = await aio_pika.connect_robust(settings.rabbitmq_url)
            self.stack = Stack(
                env=env,
                settings=settings,
                base_url=f"http://127.0.0.1:{settings.gateway_port}",
                db=db,
                amqp=amqp,
                supervisor=sup,
            )
            console.print(f"  prefix {settings.prefix}, database {url.database}")
            await self.stack.wait_ready()
            self.meter = CpuMeter({name: p.pid for name, p in sup.procs.items()}, db, str(url.database), os.getpid())
            yield self.stack
        finally:
            if sup is not None:
                sup.stop()
            if self.stack is not None:
                with contextlib.suppress(Exception):
                    await self.stack.cleanup_broker(tuple(sorted(self.hold_seconds_used)))
                with contextlib.suppress(Exception):
                    await self.stack.cleanup_redis()
            if amqp is not None:
                with contextlib.suppress(Exception):
                    await amqp.close()
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
            await drop_database(settings.database_url)

    # --- helpers ------------------------------------------------------------------------------------

    async def scrape(self) -> dict[str, str]:
        """Every service's /metrics (the gateway serves its own on the API port)."""
        assert self.stack is not None
        st = self.stack.settings
        ports = {
            "gateway": st.gateway_port,
            "inventory": st.inventory_port,
            "payment": st.payment_port,
            "mailer": st.mailer_port,
            "search": st.search_port,
            "ops": st.ops_port,
        }
        out: dict[str, str] = {}
        admin = {"Authorization": f"Bearer {self.stack.token('bench', admin=True)}"}  # the gateway's: admins only
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers=admin) as s:
            for name, port in ports.items():
                try:
                    async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                        out[name] = await r.text()
                except aiohttp.ClientError:
                    out[name] = ""
        return out

    @staticmethod
    def message_counts(before: dict[str, str], after: dict[str, str], decisions: int) -> dict[str, Any]:
        """Messages per decision between two scrapes: consumed per queue (handler invocations), relayed
        through each outbox, and the mean hold batch size."""
        n = max(1, decisions)
        consumed: dict[str, float] = {}
        outbox: dict[str, float] = {}
        for svc, text_after in after.items():
            text_before = before.get(svc, "")
            if not text_after:
                continue
            a = sample_values(text_after, "ticketing_handler_seconds_count", "queue")
            b = sample_values(text_before, "ticketing_handler_seconds_count", "queue") if text_before else {}
            for q, v in a.items():
                if v - b.get(q, 0.0) > 0:
                    consumed[f"{svc}:{q}"] = (v - b.get(q, 0.0)) / n
            a = sample_values(text_after, "ticketing_outbox_published_total", "schema")
            b = sample_values(text_before, "ticketing_outbox_published_total", "schema") if text_before else {}
            for schema, v in a.items():
                if v - b.get(schema, 0.0) > 0:
                    outbox[schema] = (v - b.get(schema, 0.0)) / n
        inv_a, inv_b = after.get("inventory", ""), before.get("inventory", "")
        count = sum(sample_values(inv_a, "ticketing_hold_batch_size_count", "").values()) - sum(
            sample_values(inv_b, "ticketing_hold_batch_size_count", "").values()
        )
        total = sum(sample_values(inv_a, "ticketing_hold_batch_size_sum", "").values()) - sum(
            sample_values(inv_b, "ticketing_hold_batch_size_sum", "").values()
        )
        return {
            "gc_pauses": gc_pauses(before, after),
            "consumed_per_decision": consumed,
            "outbox_per_decision": outbox,
            "hold_batches": count,
            "hold_batch_mean": total / count if count else None,
        }

    def session(self, concurrency: int) -> HttpPool:
        assert self.stack is not None
        return HttpPool(self.stack.base_url, concurrency)

    async def ticket_type(self, capacity: int, title: str, hold_seconds: int = LONG_HOLD_SECONDS) -> str:
        assert self.stack is not None
        self.hold_seconds_used.add(hold_seconds)
        event = await self.stack.create_event(
            capacity=capacity, per_user_limit=10, hold_seconds=hold_seconds, title=title
        )
        return str(event["ticket_types"][0]["ticket_type_id"])

    def tokens(self, n: int, tag: str) -> list[dict[str, str]]:
        assert self.stack is not None
        return [{"Authorization": f"Bearer {self.stack.token(f'bench-{tag}-{i}')}"} for i in range(n)]

    async def measured(
        self, session: HttpPool, concurrency: int, run: Callable[[], Awaitable[Load]]
    ) -> tuple[Load, CpuWindow, float]:
        assert self.meter is not None
        ceiling = await client_ceiling(concurrency)
        before = await self.scrape()
        await self._window_started()
        start = await self.meter.snapshot()
        load = await run()
        window = await self.meter.finish(start)
        await self._window_ended()
        self.last_scrapes = (before, await self.scrape())
        return load, window, ceiling

    def result(
        self,
        shape: str,
        label: str,
        rnd: int,
        attempts: int,
        concurrency: int,
        load: Load,
        window: CpuWindow,
        ceiling: float,
        figure: str,
        counted: int,
        tickets: int,
        stock: tuple[int, int, int],
        extra: dict[str, Any] | None = None,
    ) -> ShapeResult:
        capacity, held, sold = stock
        decided = sum(n for c, n in load.codes.items() if c in (201, 409, 422))
        oversold = max(0, held + sold - capacity) + max(0, load.codes.get(201, 0) - tickets)
        lat = load.latencies
        return ShapeResult(
            shape=shape,
            label=label,
            round=rnd,
            attempts=attempts,
            concurrency=concurrency,
            seconds=load.seconds,
            figure=figure,
            rate=counted / load.seconds,
            p50_ms=pct(lat, 0.5) * 1000,
            p95_ms=pct(lat, 0.95) * 1000,
            p99_ms=pct(lat, 0.99) * 1000,
            codes={str(k): v for k, v in sorted(load.codes.items())},
            tickets=tickets,
            held=held,
            oversold=oversold,
            errors=attempts - decided,
            decisions=counted,
            ceiling_rps=ceiling,
            cpu_ms_per_decision=window.per_decision_ms(counted),
            cpu_core_share=window.utilisation(),
            cpu_window_s=window.seconds,
            extra=extra if extra is not None else self.message_counts(*self.last_scrapes, counted),
        )

    # --- shapes -------------------------------------------------------------------------------------

    async def contended(
        self, shape: str, rnd: int, attempts: int, tickets: int, concurrency: int, figure: str
    ) -> ShapeResult:
        assert self.stack is not None
        self.current_label = f"{shape} c={concurrency}"
        tt = await self.ticket_type(tickets, f"bench {shape} r{rnd}")
        tokens = self.tokens(min(attempts, 2000), f"{shape}{rnd}")
        body = {"items": [{"ticket_type_id": tt, "quantity": 1}]}
        async with self.session(concurrency) as s:
            load, window, ceiling = await self.measured(
                s,
                concurrency,
                lambda: closed_loop(s, concurrency, attempts, lambda i: ("/checkout", body, tokens[i % len(tokens)])),
            )
        stock = await self.stack.stock(tt)
        decided = sum(n for c, n in load.codes.items() if c in (201, 409, 422))
        counted = sum(load.codes.values()) if figure == "responses/s" else decided
        return self.result(
            shape,
            f"{shape} c={concurrency}",
            rnd,
            attempts,
            concurrency,
            load,
            window,
            ceiling,
            figure,
            counted,
            tickets,
            stock,
        )

    async def rush(self, rnd: int) -> list[ShapeResult]:
        a = self.args
        return [await self.contended("rush", rnd, a.rush_attempts, a.rush_tickets, a.rush_concurrency, "responses/s")]

    async def mix(self, rnd: int) -> list[ShapeResult]:
        a = self.args
        return [await self.contended("mix", rnd, a.mix_attempts, a.mix_tickets, a.mix_concurrency, "decided/s")]

    async def holds(self, rnd: int) -> list[ShapeResult]:
        assert self.stack is not None
        out: list[ShapeResult] = []
        n = self.args.hold_attempts
        for c in self.args.hold_concurrency:
            self.current_label = f"holds c={c}"
            tt = await self.ticket_type(n, f"bench holds c{c} r{rnd}")
            tokens = self.tokens(n, f"holds{c}-{rnd}")
            body = {"items": [{"ticket_type_id": tt, "quantity": 1}]}

            def request(
                i: int, body: dict[str, Any] = body, tokens: list[dict[str, str]] = tokens
            ) -> tuple[str, dict[str, Any], dict[str, str]]:
                return "/checkout", body, tokens[i]

            async with self.session(c) as s:
                load, window, ceiling = await self.measured(
                    s,
                    c,
                    lambda s=s, c=c, request=request: closed_loop(s, c, n, request),  # type: ignore[misc]
                )
            stock = await self.stack.stock(tt)
            held = load.codes.get(201, 0)
            out.append(
                self.result("holds", f"holds c={c}", rnd, n, c, load, window, ceiling, "orders/s", held, n, stock)
            )
            self.last_hold_rate = held / load.seconds
        return out

    async def release(self, rnd: int) -> list[ShapeResult]:
        """N holds that all expire within the same second, placed through the API at ``--release-concurrency``.

        A hold's expiry is its placement time plus its ticket type's hold duration; placement takes several
        seconds, so the holds placed in second k of the placement go to a ticket type (of its own event) whose
        hold lasts ``H - k`` seconds: all of them expire in [start + H, start + H + 1). H is chosen from the
        holds rate measured in this round (placement must end before the first expiry) unless given."""
        assert self.stack is not None and self.meter is not None
        a = self.args
        n, c = a.release_holds, a.release_concurrency
        if a.release_hold_seconds:
            hold = a.release_hold_seconds
        else:
            rate = self.last_hold_rate or 40.0
            hold = max(10, math.ceil(n / rate * 1.5) + 8)
        self.current_label = f"release n={n}"
        per_second: dict[int, str] = {}
        creating: dict[int, asyncio.Lock] = {}
        tokens = self.tokens(n, f"release{rnd}")

        async def ticket_type_for(k: int) -> str:
            k = min(k, hold - 3)  # a hold of at least 3 s (the delay message fires up to 1 s early)
            if k not in per_second:
                async with creating.setdefault(k, asyncio.Lock()):
                    if k not in per_second:
                        per_second[k] = await self.ticket_type(n, f"bench release r{rnd} k{k}", hold - k)
            return per_second[k]

        await ticket_type_for(0)
        await ticket_type_for(1)
        inventory_metrics = f"http://127.0.0.1:{self.stack.settings.inventory_port}/metrics"
        async with self.session(c) as s:
            ceiling = await client_ceiling(c)
            async with aiohttp.ClientSession() as plain, plain.get(inventory_metrics) as r:
                metrics_before = await r.text()
            placed_codes: dict[int, int] = {}
            next_hold = iter(range(n))
            started = time.monotonic()

            async def place() -> None:
                for i in next_hold:
                    tt = await ticket_type_for(int(time.monotonic() - started))
                    r = await s.post(
                        "/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]}, headers=tokens[i]
                    )
                    placed_codes[r.status] = placed_codes.get(r.status, 0) + 1

            await asyncio.gather(*(place() for _ in range(c)))
            placement = time.monotonic() - started
            ids = [uuid.UUID(t) for t in per_second.values()]
            bounds = await self.stack.db.fetchrow(
                "SELECT min(o.expires_at) AS first, max(o.expires_at) AS last, "
                "EXTRACT(EPOCH FROM min(o.expires_at) - now()) AS wait FROM inventory.orders o "
                "JOIN inventory.order_items i ON i.order_id = o.id WHERE i.ticket_type_id = ANY($1::uuid[]) "
                "AND o.status = 'PENDING'",
                ids,
            )
            assert bounds is not None
            held_total = placed_codes.get(201, 0)
            wait = float(bounds["wait"] or 0)
            console.print(
                f"  release: {held_total} holds placed in {placement:.1f} s (hold {hold} s), expiring "
                f"within {(bounds['last'] - bounds['first']).total_seconds():.2f} s, in {wait:.1f} s"
            )
            await asyncio.sleep(max(0.0, wait - 1.0))
            scrape_before = await self.scrape()
            await self._window_started()
            start_cpu = await self.meter.snapshot()
            deadline = time.monotonic() + a.release_timeout
            left = -1
            while time.monotonic() < deadline:
                left = int(
                    await self.stack.db.fetchval(
                        "SELECT COALESCE(sum(held), 0) FROM inventory.ticket_types WHERE id = ANY($1::uuid[])", ids
                    )
                )
                if left == 0:
                    break
                await asyncio.sleep(0.05)
            window = await self.meter.finish(start_cpu)
            await self._window_ended()
            async with aiohttp.ClientSession() as plain, plain.get(inventory_metrics) as r:
                metrics_after = await r.text()
        rows = await self.stack.db.fetch(
            "SELECT EXTRACT(EPOCH FROM o.updated_at - o.expires_at) AS late FROM inventory.orders o "
            "JOIN inventory.order_items i ON i.order_id = o.id WHERE i.ticket_type_id = ANY($1::uuid[]) "
            "AND o.status = 'EXPIRED'",
            ids,
        )
        late = sorted(float(r["late"]) * 1000 for r in rows)
        name = "ticketing_hold_release_lateness_seconds"
        hb, ha = histogram_counts(metrics_before, name), histogram_counts(metrics_after, name)
        rb = counter_values(metrics_before, "ticketing_holds_released_total")
        ra = counter_values(metrics_after, "ticketing_holds_released_total")
        released_by = {k: int(v - rb.get(k, 0.0)) for k, v in ra.items() if v - rb.get(k, 0.0) > 0}
        h50, h99 = bucket_quantile(hb, ha, 0.5), bucket_quantile(hb, ha, 0.99)
        extra = {
            "hold_seconds": hold,
            "placement_s": placement,
            "placed": held_total,
            "expiry_spread_s": (bounds["last"] - bounds["first"]).total_seconds(),
            "released": len(late),
            "still_held": left,
            "late_p50_ms": pct(late, 0.5),
            "late_p99_ms": pct(late, 0.99),
            "late_max_ms": max(late, default=0.0),
            "metric_p50_le_ms": None if h50 is None else h50 * 1000,
            "metric_p99_le_ms": None if h99 is None else h99 * 1000,
            "released_by": released_by,
            "delay_queues": len(per_second),
            **self.message_counts(scrape_before, await self.scrape(), len(late)),
        }
        load = Load(window.seconds, [], placed_codes)
        return [
            self.result(
                "release",
                f"release n={n}",
                rnd,
                n,
                c,
                load,
                window,
                ceiling,
                "releases/s",
                len(late),
                n,
                (n, 0, 0),
                extra,
            )
        ]

    async def warm_up(self) -> None:
        assert self.stack is not None
        tt = await self.ticket_type(100, "bench warm-up")
        tokens = self.tokens(200, "warm")
        body = {"items": [{"ticket_type_id": tt, "quantity": 1}]}
        async with self.session(16) as s:
            await closed_loop(s, 16, 200, lambda i: ("/checkout", body, tokens[i]))

    async def settle(self, limit: float = 120.0, idle_share: float = 0.05) -> float:
        """Wait until the services are idle (the previous shape's tail, e.g. the mailer sending 1,000 expiry
        notices, would otherwise run inside the next shape's window). Returns the seconds waited."""
        assert self.meter is not None and self.stack is not None
        services = set(self.stack.supervisor.procs)
        started = time.monotonic()
        while time.monotonic() - started < limit:
            snap = await self.meter.snapshot()
            await asyncio.sleep(1.0)
            window = await self.meter.finish(snap)
            busy = {k: v / window.seconds for k, v in window.groups.items() if k in services}
            if max(busy.values(), default=0.0) < idle_share:
                break
        return time.monotonic() - started

    async def run_shape(self, shape: str, rnd: int) -> list[ShapeResult]:
        waited = await self.settle()
        if waited > 2.5:
            console.print(f"  (waited {waited:.0f} s for the services to go idle)")
        runner: dict[str, Callable[[int], Awaitable[list[ShapeResult]]]] = {
            "rush": self.rush,
            "holds": self.holds,
            "mix": self.mix,
            "release": self.release,
        }
        return await runner[shape](rnd)


# --- report ---------------------------------------------------------------------------------------------


def mmm(values: list[float], fmt: str = "{:.0f}") -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return fmt.format(vals[0])
    return " / ".join(fmt.format(v) for v in (min(vals), statistics.median(vals), max(vals)))


def by_label(results: list[ShapeResult]) -> dict[str, list[ShapeResult]]:
    out: dict[str, list[ShapeResult]] = {}
    for r in results:
        out.setdefault(r.label, []).append(r)
    return out


def print_report(results: list[ShapeResult], rounds: int) -> None:
    title = (
        f"Flash sale, every service running: min / median / max over {rounds} round(s) "
        f"({os.cpu_count()} cores, Python {platform.python_version()})"
    )
    table = Table(title=title)
    for col in (
        "shape",
        "figure",
        "rate",
        "client ceiling /s",
        "ceiling / rate",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "held",
        "oversold",
        "errors",
    ):
        table.add_column(col, justify="right")
    for label, rs in by_label(results).items():
        if rs[0].shape == "release":
            continue
        table.add_row(
            label,
            rs[0].figure,
            mmm([r.rate for r in rs]),
            mmm([r.ceiling_rps for r in rs]),
            mmm([r.ceiling_rps / max(r.rate, 1e-9) for r in rs], "{:.1f}x"),
            mmm([r.p50_ms for r in rs]),
            mmm([r.p95_ms for r in rs]),
            mmm([r.p99_ms for r in rs]),
            mmm([float(r.held) for r in rs]),
            str(sum(r.oversold for r in rs)),
            str(sum(r.errors for r in rs)),
        )
    console.print(table)

    releases = [r for r in results if r.shape == "release"]
    if releases:
        t = Table(
            title="Hold release: N holds expiring in the same second (lateness = expires_at -> EXPIRED, "
            "stock back; 'metric' = bucket bound of the inventory's histogram)"
        )
        for col in (
            "shape",
            "placed",
            "expiry spread s",
            "released",
            "still held",
            "p50 ms",
            "p99 ms",
            "max ms",
            "metric p50 <= ms",
            "metric p99 <= ms",
            "released by",
            "client ceiling /s",
        ):
            t.add_column(col, justify="right")
        for label, rs in by_label(releases).items():
            e = [r.extra for r in rs]
            by: dict[str, int] = {}
            for x in e:
                for k, v in x["released_by"].items():
                    by[k] = by.get(k, 0) + v
            t.add_row(
                label,
                mmm([x["placed"] for x in e]),
                mmm([x["expiry_spread_s"] for x in e], "{:.2f}"),
                mmm([x["released"] for x in e]),
                str(sum(x["still_held"] for x in e)),
                mmm([x["late_p50_ms"] for x in e]),
                mmm([x["late_p99_ms"] for x in e]),
                mmm([x["late_max_ms"] for x in e]),
                mmm([x["metric_p50_le_ms"] for x in e]),
                mmm([x["metric_p99_le_ms"] for x in e]),
                "; ".join(f"{k.replace('status=', '').replace('by=', '')}: {v}" for k, v in sorted(by.items())),
                mmm([r.ceiling_rps for r in rs]),
            )
        console.print(t)

    cpu = Table(
        title="CPU ms per decision per process (median over rounds; window = the shape's requests; "
        "release: per released hold). 'others' = the rest of the machine in the same window"
    )
    cpu.add_column("shape")
    for name in SERVICE_ORDER:
        cpu.add_column(name, justify="right")
    share = Table(title="Share of one core per process over the shape's window (median over rounds)")
    share.add_column("shape")
    for name in SERVICE_ORDER:
        if name not in ("stack total", "others (not ours)"):
            share.add_column(name, justify="right")
    for label, rs in by_label(results).items():
        cpu.add_row(
            label, *(f"{statistics.median([r.cpu_ms_per_decision.get(n, 0.0) for r in rs]):.2f}" for n in SERVICE_ORDER)
        )
        share.add_row(
            label,
            *(
                f"{statistics.median([r.cpu_core_share.get(n, 0.0) for r in rs]):.2f}"
                for n in SERVICE_ORDER
                if n not in ("stack total", "others (not ours)")
            ),
        )
    console.print(cpu)
    console.print(share)

    msgs = Table(
        title="Messages per decision (median over rounds): consumed per queue = handler invocations "
        "(ticketing_handler_seconds_count), relayed per outbox (ticketing_outbox_published_total)"
    )
    for col in ("shape", "consumed per decision, by service:queue", "outbox rows per decision", "hold batch mean"):
        msgs.add_column(col)
    for label, rs in by_label(results).items():
        keys = sorted({k for r in rs for k in r.extra.get("consumed_per_decision", {})})
        consumed = ", ".join(
            f"{k} {statistics.median([r.extra['consumed_per_decision'].get(k, 0.0) for r in rs]):.2f}" for k in keys
        )
        okeys = sorted({k for r in rs for k in r.extra.get("outbox_per_decision", {})})
        outbox = ", ".join(
            f"{k} {statistics.median([r.extra['outbox_per_decision'].get(k, 0.0) for r in rs]):.2f}" for k in okeys
        )
        means = [r.extra["hold_batch_mean"] for r in rs if r.extra.get("hold_batch_mean")]
        msgs.add_row(label, consumed, outbox, f"{statistics.median(means):.1f}" if means else "-")
    console.print(msgs)

    pauses = Table(
        title="Garbage-collector pauses in the shape's window (ticketing_gc_pause_seconds): collections, total ms, "
        "longest (upper bound of its bucket), min / median / max over rounds"
    )
    for col in ("shape", "service", "collections", "total ms", "longest ms <="):
        pauses.add_column(col)
    for label, rs in by_label(results).items():
        for svc in SERVICE_ORDER:
            seen = [r.extra.get("gc_pauses", {}).get(svc) for r in rs]
            if not any(seen):
                continue
            got = [p or {"count": 0.0, "total_ms": 0.0, "longest_le_ms": 0.0} for p in seen]
            pauses.add_row(
                label,
                svc,
                mmm([p["count"] for p in got]),
                mmm([p["total_ms"] for p in got]),
                mmm([p["longest_le_ms"] for p in got], "{:g}"),
            )
    console.print(pauses)


def markdown(results: list[ShapeResult]) -> str:
    """The summary, release and CPU tables as Markdown (for docs/benchmarks.md)."""
    lines = [
        "| shape | figure | min / median / max | client ceiling /s (median) | p50 ms | p95 ms | p99 ms | "
        "held | oversold | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, rs in by_label(results).items():
        if rs[0].shape == "release":
            continue
        lines.append(
            f"| {label} | {rs[0].figure} | {mmm([r.rate for r in rs])} | "
            f"{statistics.median([r.ceiling_rps for r in rs]):.0f} | {mmm([r.p50_ms for r in rs])} | "
            f"{mmm([r.p95_ms for r in rs])} | {mmm([r.p99_ms for r in rs])} | "
            f"{mmm([float(r.held) for r in rs])} | {sum(r.oversold for r in rs)} | "
            f"{sum(r.errors for r in rs)} |"
        )
    releases = [r for r in results if r.shape == "release"]
    if releases:
        lines += [
            "",
            "| shape | expiry spread s | released | lateness p50 ms | p99 ms | max ms | "
            "histogram p99 bucket <= ms | released by (all rounds) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for label, rs in by_label(releases).items():
            e = [r.extra for r in rs]
            by: dict[str, int] = {}
            for x in e:
                for k, v in x["released_by"].items():
                    key = dict(kv.split("=", 1) for kv in k.split(",")).get("by", k)
                    by[key] = by.get(key, 0) + v
            lines.append(
                f"| {label} | {mmm([x['expiry_spread_s'] for x in e], '{:.2f}')} | "
                f"{mmm([x['released'] for x in e])} | {mmm([x['late_p50_ms'] for x in e])} | "
                f"{mmm([x['late_p99_ms'] for x in e])} | {mmm([x['late_max_ms'] for x in e])} | "
                f"{mmm([x['metric_p99_le_ms'] for x in e])} | "
                + ", ".join(f"{k} {v}" for k, v in sorted(by.items()))
                + " |"
            )
    lines += ["", "| shape | " + " | ".join(SERVICE_ORDER) + " |", "|---" * (len(SERVICE_ORDER) + 1) + "|"]
    for label, rs in by_label(results).items():
        lines.append(
            f"| {label} | "
            + " | ".join(
                f"{statistics.median([r.cpu_ms_per_decision.get(n, 0.0) for r in rs]):.2f}" for n in SERVICE_ORDER
            )
            + " |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    mem = psutil.virtual_memory().total / 2**30
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated, of {','.join(SHAPES)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", metavar="PATH", help="also write every result (and the summary inputs) as JSON")
    p.add_argument("--rush-attempts", type=int, default=2000)
    p.add_argument("--rush-tickets", type=int, default=100)
    p.add_argument("--rush-concurrency", type=int, default=50)
    p.add_argument("--hold-attempts", type=int, default=1000)
    p.add_argument("--hold-concurrency", type=int, nargs="+", default=[16, 64])
    p.add_argument("--mix-attempts", type=int, default=3000)
    p.add_argument("--mix-tickets", type=int, default=1000)
    p.add_argument("--mix-concurrency", type=int, default=64)
    p.add_argument("--release-holds", type=int, default=1000)
    p.add_argument("--release-concurrency", type=int, default=64)
    p.add_argument(
        "--release-hold-seconds",
        type=int,
        default=0,
        help="hold duration of the first placement second (default: from the measured holds rate)",
    )
    p.add_argument("--release-timeout", type=float, default=90.0)
    p.add_argument(
        "--rate-limit",
        type=int,
        default=Settings().checkout_rate_limit,
        help="TICKETING_CHECKOUT_RATE_LIMIT for the run (the deployed default; 0 = off)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="TICKETING_X=V",
        help="extra environment for the services (repeatable), e.g. to compare a setting",
    )
    p.add_argument(
        "--scale",
        default="",
        metavar="SERVICE=N,...",
        help="processes per service, as `ticketing up --scale` (e.g. gateway=2,inventory=2; the CPU of replicas "
        "counts with their service; metrics, idle waits and message counts read the first replica only)",
    )
    p.add_argument("--verbose", action="store_true", help="show the services' logs")
    p.add_argument("--from-json", metavar="PATH", help="print the tables (and Markdown) of a saved --json run")
    args = p.parse_args(argv)
    args.shape_list = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = set(args.shape_list) - set(SHAPES)
    if unknown:
        p.error(f"unknown shape(s): {', '.join(sorted(unknown))}")
    return args


async def run(args: argparse.Namespace) -> list[ShapeResult]:
    bench = Bench(args)
    results: list[ShapeResult] = []
    console.print(f"[bold]starting the stack[/bold] (load average {os.getloadavg()[0]:.2f})")
    async with bench.running():
        await bench.warm_up()
        for rnd in range(1, args.rounds + 1):
            for shape in args.shape_list:
                for r in await bench.run_shape(shape, rnd):
                    results.append(r)
                    console.print(
                        f"  round {rnd} {r.label:14} {r.rate:7.0f} {r.figure:12} p99 {r.p99_ms:7.0f} ms  "
                        f"ceiling {r.ceiling_rps:5.0f}/s  CPU {r.cpu_ms_per_decision['stack total']:5.1f} "
                        f"ms/decision  oversold {r.oversold}  errors {r.errors}  codes {r.codes}"
                        + (f"  {r.extra['late_p99_ms']:.0f} ms p99 late" if "late_p99_ms" in r.extra else "")
                    )
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        results = [ShapeResult(**r) for r in saved["results"]]
        print_report(results, saved["args"]["rounds"])
        print(markdown(results))
        return
    meta = {
        "command": " ".join([os.path.basename(sys.executable), "-m", "bench.flash_sale", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }

    async def guarded() -> list[ShapeResult]:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)  # clean up (services, queues, database) on TERM too
        return await run(args)

    results = loadgen.run(guarded())  # uvloop: the load client's own CPU per request
    print_report(results, args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    **meta,
                    "machine_end": {"load_average": os.getloadavg()},
                    "args": {k: v for k, v in vars(args).items() if k != "env"},
                    "results": [asdict(r) for r in results],
                },
                f,
                indent=2,
                default=str,
            )
        console.print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
