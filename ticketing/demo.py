"""`ticketing demo`: start the stack, run a small flash sale, let holds expire, print what happened."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import text

from services.gateway.auth import issue_token
from shared.db import make_engine
from shared.settings import Settings, get_settings
from ticketing import loadgen
from ticketing.loadgen import HttpPool, client_ceiling
from ticketing.ports import free_port

console = Console()
DEMO_PREFIX = "demo."
_DEMO_STARTED = time.time()


def _demo_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TICKETING_PREFIX", DEMO_PREFIX)
    env["TICKETING_GATEWAY_PORT"] = str(free_port())
    for service in ("inventory", "payment", "mailer", "search", "paysim"):
        env[f"TICKETING_{service.upper()}_PORT"] = str(free_port())
    env.setdefault("TICKETING_SWEEPER_INTERVAL_SECONDS", "5")
    env.setdefault("TICKETING_CHECKOUT_RATE_LIMIT", "0")
    env.setdefault("TICKETING_LOG_LEVEL", "WARNING")
    return env


@dataclass
class SaleResult:
    codes: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    held_orders: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    client_ceiling: float = 0.0  # requests/s of the load client against a null server at the same concurrency


def run_demo(buyers: int, tickets: int, hold_seconds: int) -> int:
    from ticketing.cli import prepare_database
    from ticketing.supervisor import Supervisor

    env = _demo_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith("TICKETING_")})
    get_settings.cache_clear()
    settings = get_settings()
    with console.status("Creating the database and applying migrations..."):
        prepare_database()
    sup = Supervisor(env=env, quiet=True, restart=False)
    sup.start()
    try:
        return loadgen.run(_run(settings, buyers, tickets, hold_seconds))
    finally:
        with console.status("Stopping the services..."):
            sup.stop()
        with console.status("Deleting the demo's queues and exchange..."):
            asyncio.run(_delete_demo_queues(settings))


async def _delete_demo_queues(settings: Settings) -> None:
    """A demo leaves nothing on the broker (its database stays, for `ticketing mail ls` and a look around)."""
    from shared.topology import Names, all_queue_names
    from ticketing.broker_node import delete_prefix

    names = Names(settings.prefix)
    try:
        await delete_prefix(settings.rabbitmq_url, settings.prefix, all_queue_names(names), [names.events_exchange])
    except Exception as exc:  # the demo's result is printed already; say what is left, do not fail
        console.print(f"[yellow]could not delete the demo's queues ({type(exc).__name__}: {exc})[/yellow]")


async def _wait_ready(settings: Settings) -> None:
    ports = [settings.gateway_port, settings.inventory_port]
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as c:
        while time.monotonic() < deadline:
            try:
                codes = [(await c.get(f"http://127.0.0.1:{p}/readyz")).status_code for p in ports]
                if all(code == 200 for code in codes):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise SystemExit("the services did not become ready within 60 s (is RabbitMQ/PostgreSQL/Redis running?)")


async def _run(settings: Settings, buyers: int, tickets: int, hold_seconds: int) -> int:
    with console.status("Starting every service..."):
        await _wait_ready(settings)
    base = f"http://127.0.0.1:{settings.gateway_port}"
    admin = issue_token(settings, "demo-organiser", "organiser@example.com", ["admin"])
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        event = await _create_event(client, admin, tickets, hold_seconds)
        tt = event["ticket_types"][0]["ticket_type_id"]
        console.print(
            f"[bold]Event[/bold] {event['title']} — {tickets} tickets, holds last {hold_seconds} s; "
            f"{buyers} buyers rush in at once."
        )
        sale = await _flash_sale(client, settings, tt, buyers)
        cancelled = await _cancel_some(client, settings, sale.held_orders)
        paid = await _pay_some(client, sale.held_orders[cancelled:])
        sold = sum(sum(i["quantity"] for i in o["items"]) for o in paid)
        await _wait_for_expiry(client, event["event_id"], tickets - sold, hold_seconds)
        found = await _search(client, "roi nuoc thang")
        emails = await _wait_for_emails(settings, expected=len(sale.held_orders) - cancelled)
    lateness = await _release_lateness(settings, event["event_id"])
    _print_report(sale, cancelled, paid, lateness, tickets, buyers, await _final_stock(client_base=base, event=event))
    console.print(f"Search for [bold]'roi nuoc thang'[/bold] (typed without accents): {found}")
    console.print(
        f"Emails in the local SMTP sink: [bold]{emails}[/bold] (tickets for the paid orders, a notice "
        "for each expired hold). See them with `.venv/bin/ticketing mail ls` / `mail show`."
    )
    return 0


async def _create_event(client: httpx.AsyncClient, admin: str, tickets: int, hold_seconds: int) -> dict[str, Any]:
    r = await client.post(
        "/admin/events",
        headers={"Authorization": f"Bearer {admin}"},
        json={
            "title": "Múa rối nước Thăng Long — đêm đặc biệt",
            "venue": "Nhà hát Múa rối Thăng Long",
            "city": "Hà Nội",
            "starts_at": "2030-06-01T20:00:00+07:00",
            "hold_seconds": hold_seconds,
            "description": "Demo flash sale",
            "ticket_types": [{"name": "Hạng A", "price": 250_000, "capacity": tickets, "per_user_limit": 4}],
        },
    )
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


LOAD_CONCURRENCY = 64  # requests in flight at most, like a browser crowd behind a few proxies


async def _flash_sale(client: httpx.AsyncClient, settings: Settings, tt: str, buyers: int) -> SaleResult:
    """The buyers rush in at once through the lean load client (httpx's pool tops out near 150 requests/s at
    64 in flight, aiohttp's near 1,850, which would measure the client, not the server); the client's own
    ceiling is measured against a null server at the same concurrency, right before the sale, and printed beside
    the result (ticketing/loadgen.py)."""
    result = SaleResult()
    rng = random.Random(42)
    tokens = [issue_token(settings, f"buyer-{i}", f"buyer-{i}@example.com", []) for i in range(buyers)]
    progress = Progress(
        TextColumn("Flash sale"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    async with HttpPool(str(client.base_url).rstrip("/"), LOAD_CONCURRENCY, timeout=60) as pool:
        result.client_ceiling = await client_ceiling(LOAD_CONCURRENCY, seconds=1.0)

        async def buy(token: str, task: Any) -> None:
            started = time.perf_counter()
            r = await pool.post(
                "/checkout",
                headers={"Authorization": f"Bearer {token}"},
                json={"items": [{"ticket_type_id": tt, "quantity": rng.choice([1, 1, 2])}]},
            )
            body = r.json()
            status = r.status
            result.latencies.append(time.perf_counter() - started)
            result.codes[status] += 1
            if status == 201:
                result.held_orders.append({**body, "token": token})
            elif "reason" in body:
                result.reasons[body["reason"]] += 1
            progress.advance(task)

        with progress:
            task = progress.add_task("sale", total=buyers)
            started = time.perf_counter()
            await asyncio.gather(*(buy(t, task) for t in tokens))
            result.seconds = time.perf_counter() - started
    return result


async def _cancel_some(client: httpx.AsyncClient, settings: Settings, held: list[dict[str, Any]]) -> int:
    """A few buyers change their mind: their tickets go back on sale at once."""
    chosen = held[: max(1, len(held) // 10)] if held else []
    for order in chosen:
        r = await client.post(
            f"/orders/{order['order_id']}/cancel", headers={"Authorization": f"Bearer {order['token']}"}
        )
        r.raise_for_status()
    return len(chosen)


async def _pay_some(client: httpx.AsyncClient, held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Half of the remaining buyers pay on the (simulated) VNPAY page; the others walk away."""
    from services.paysim.client import pay_with_simulator

    payers = held[: len(held) // 2]
    progress = Progress(
        TextColumn("Paying through the VNPAY simulator"), BarColumn(), MofNCompleteColumn(), console=console
    )
    with progress:
        task = progress.add_task("pay", total=len(payers))

        async def pay(order: dict[str, Any]) -> None:
            await pay_with_simulator(order["payment_url"], approve=True)
            headers = {"Authorization": f"Bearer {order['token']}"}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the IPN makes it PAID, not the browser's return
                if (await client.get(f"/orders/{order['order_id']}", headers=headers)).json()["status"] == "PAID":
                    break
                await asyncio.sleep(0.2)
            progress.advance(task)

        await asyncio.gather(*(pay(o) for o in payers))
    return payers


async def _wait_for_expiry(client: httpx.AsyncClient, event_id: str, tickets: int, hold_seconds: int) -> None:
    progress = Progress(
        TextColumn("Waiting for unpaid holds to expire"), BarColumn(), TimeElapsedColumn(), console=console
    )
    deadline = time.monotonic() + hold_seconds + 30
    with progress:
        task = progress.add_task("expiry", total=tickets)
        while time.monotonic() < deadline:
            detail = (await client.get(f"/events/{event_id}")).json()
            available = detail["ticket_types"][0]["available"]
            progress.update(task, completed=available)
            if available == tickets:
                return
            await asyncio.sleep(0.25)


async def _search(client: httpx.AsyncClient, query: str) -> str:
    r = await client.get("/search", params={"q": query})
    if r.status_code != 200:
        return f"HTTP {r.status_code}"
    body = r.json()
    titles = ", ".join(hit["title"] for hit in body["results"][:3])
    return f"{body['total']} result(s) from the {body['source']}: {titles}"


async def _wait_for_emails(settings: Settings, expected: int, timeout: float = 30.0) -> int:
    """The mailer works asynchronously: wait (bounded) until the sink holds the expected emails."""
    from services.mailer.sink import list_mail, sink_dir

    path = sink_dir(settings)
    before = time.monotonic()
    count = 0
    with console.status("Waiting for the ticket emails..."):
        while time.monotonic() - before < timeout:
            count = sum(1 for m in list_mail(path) if m.received.timestamp() >= _DEMO_STARTED)
            if count >= expected:
                break
            await asyncio.sleep(0.5)
    return count


async def _release_lateness(settings: Settings, event_id: str) -> list[float]:
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT EXTRACT(EPOCH FROM updated_at - expires_at) FROM inventory.orders "
                    "WHERE event_id = :e AND status = 'EXPIRED'"
                ),
                {"e": uuid.UUID(event_id)},
            )
            return sorted(float(r[0]) for r in rows)
    finally:
        await engine.dispose()


async def _final_stock(client_base: str, event: dict[str, Any]) -> int:
    async with httpx.AsyncClient(base_url=client_base) as c:
        return int((await c.get(f"/events/{event['event_id']}")).json()["ticket_types"][0]["available"])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _print_report(
    sale: SaleResult,
    cancelled: int,
    paid: list[dict[str, Any]],
    lateness: list[float],
    tickets: int,
    buyers: int,
    available_after: int,
) -> None:
    held_tickets = sum(sum(i["quantity"] for i in o["items"]) for o in sale.held_orders)
    table = Table(title="Flash sale", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("buyers (concurrent)", str(buyers))
    table.add_row("tickets on sale", str(tickets))
    table.add_row("orders held (201)", f"{len(sale.held_orders)} ({held_tickets} tickets)")
    for reason, n in sorted(sale.reasons.items()):
        table.add_row(f"rejected: {reason}", str(n))
    table.add_row("server errors (5xx)", str(sum(n for c, n in sale.codes.items() if c >= 500)))
    table.add_row("oversold tickets", str(max(0, held_tickets - tickets)))
    table.add_row(
        "decided checkouts / s",
        f"{buyers / sale.seconds:.0f} (client ceiling {sale.client_ceiling:.0f}/s against a null server, "
        f"{LOAD_CONCURRENCY} in flight)",
    )
    lat = [x * 1000 for x in sale.latencies]
    table.add_row(
        f"checkout latency p50 / p95 / p99 (from the click; {LOAD_CONCURRENCY} connections)",
        f"{_pct(lat, 0.5):.0f} / {_pct(lat, 0.95):.0f} / {_pct(lat, 0.99):.0f} ms",
    )
    table.add_row(
        "paid through VNPAY (simulator) -> sold",
        f"{len(paid)} ({sum(sum(i['quantity'] for i in o['items']) for o in paid)} tickets)",
    )
    table.add_row("cancelled by the buyer (released at once)", str(cancelled))
    table.add_row("expired unpaid (released by the delay queue)", str(len(lateness)))
    if lateness:
        table.add_row(
            "release lateness p50 / p99 / max",
            f"{statistics.median(lateness) * 1000:.0f} / {_pct(lateness, 0.99) * 1000:.0f} / "
            f"{max(lateness) * 1000:.0f} ms",
        )
    table.add_row("available after the unpaid holds expired", f"{available_after} of {tickets}")
    console.print(table)
