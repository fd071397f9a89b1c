"""Faults in the middle of a sale (issue 13, item 6): SIGKILL each service, stop the broker's application,
terminate the services' PostgreSQL backends, flush the run's Redis keys, while many buyers check out.

Each test runs a stack of its own (own database, prefix, ports and processes; the broker test its own RabbitMQ
node), so killing things disturbs no other test. Buyers behave like a careful client: every checkout carries an
Idempotency-Key and is retried with it, with backoff, on 5xx, 202 (still queued), 429 and connection errors,
until a final answer (201/200 order, 409/422 rejection) or an overall deadline. Some buyers pay through the
simulator. After the fault, the sale must add up: every checkout decided and recorded as the buyer was told,
held/sold equal to what the orders say and within capacity, each payment applied once, each ticket email sent
once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from services.paysim.client import pay_with_simulator
from shared.settings import Settings
from shared.topology import all_queue_names, mailer_notifications
from tests.harness import Stack, eventually, run_environment, running_stack
from ticketing.broker_node import BrokerNode
from ticketing.supervisor import Supervisor

# The services a sale needs (search and the DLQ keeper are not on its path and only cost CPU here).
SALE_SERVICES = ("inventory", "payment", "mailer", "gateway", "paysim")
HOLD_SECONDS = 900  # no hold expires during a test: PENDING stays held, so held/sold are exact
CLIENT_DEADLINE = 120.0  # a buyer gives up after this long (the test then fails: a checkout left undecided)
TEST_APP = "faults-test"  # the test's own PostgreSQL sessions, spared by pg_terminate_backend


# --- a stack of its own ---------------------------------------------------------------------------------


@dataclass
class FaultStack:
    stack: Stack
    node: BrokerNode | None
    watching: list[bool] = field(default_factory=lambda: [False])
    watcher: threading.Thread | None = None

    @property
    def supervisor(self) -> Supervisor:
        return self.stack.supervisor  # type: ignore[no-any-return]

    def watch(self) -> None:
        """Restart dead services as `ticketing up` does (Supervisor.watch, in a thread)."""
        self.watcher = threading.Thread(target=self.supervisor.watch, args=(self.watching,), daemon=True)
        self.watcher.start()

    def unwatch(self) -> None:
        self.watching[0] = True
        if self.watcher is not None:
            self.watcher.join(timeout=5)


@contextlib.asynccontextmanager
async def own_stack(
    base: Settings, monkeypatch: pytest.MonkeyPatch, own_broker: bool = False, services: tuple[str, ...] = SALE_SERVICES
) -> AsyncIterator[FaultStack]:
    async with contextlib.AsyncExitStack() as resources:
        node: BrokerNode | None = None
        if own_broker:
            node = BrokerNode.create("ticketing-faults")
            await asyncio.to_thread(node.start)
            resources.push_async_callback(asyncio.to_thread, node.stop)  # the node goes with its queues
        env = run_environment(base)
        env.update(
            {
                "TICKETING_CHECKOUT_WAIT_SECONDS": "5",  # a checkout whose decision is late answers 202 sooner
                "TICKETING_BROKER_RETRY_INITIAL_SECONDS": "0.2",
                "TICKETING_BROKER_RETRY_MAX_SECONDS": "1",
                # VNPAY's 10 IPN calls span 50 minutes, far longer than any fault here; the harness's 0.5 s
                # spacing (5 s in all) can end inside a broker restart, and the payment would then wait for
                # reconciliation near the hold's expiry (900 s away). 2 s spacing outlasts every fault here.
                "TICKETING_PAYSIM_IPN_RETRY_SECONDS": "2",
                # A SIGKILLed mailer leaves its claim leased (10 s here): the redelivered email must still be
                # retrying when the lease runs out, so the ladder outlasts it (1+2+3 s did not, in one CI run).
                "TICKETING_MAILER_RETRY_DELAYS": "[1,2,3,5]",
            }
        )
        if node is not None:
            env["TICKETING_RABBITMQ_URL"] = node.url
        for key, value in env.items():
            if key.startswith("TICKETING_"):
                monkeypatch.setenv(key, value)
        settings = Settings()
        stack = await resources.enter_async_context(
            running_stack(
                env,
                settings,
                services=services,
                hold_durations=(HOLD_SECONDS,),
                ready_timeout=90.0,
                pool_size=4,
                app_name=TEST_APP,
                delete_queues=node is None,
            )
        )
        fs = FaultStack(stack=stack, node=node)
        fs.watch()
        try:
            yield fs
        finally:
            fs.unwatch()


# --- the buyers -------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    user: str
    key: str
    items: list[dict[str, Any]]
    status: int = 0
    order_id: str | None = None
    order_status: str | None = None
    reason: str | None = None
    paid: bool = False
    attempts: int = 0


async def _backoff(attempt: int, deadline: float) -> None:
    """A client's pause between retries (not a wait for a message): doubling, jittered, within the deadline."""
    pause = min(2.0, 0.1 * 2 ** min(attempt, 5)) * random.uniform(0.5, 1.0)
    await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))


async def buy(stack: Stack, outcome: Outcome, pay: bool, gate: asyncio.Event | None, arrives: float) -> Outcome:
    """Arrive (after ``gate`` opens, if any, then ``arrives`` s), check out with one Idempotency-Key until a final
    answer, then (if ``pay``) pay through the simulator."""
    if gate is not None:
        await gate.wait()
    await asyncio.sleep(arrives)  # the buyer's arrival schedule (a sale spread over a few seconds)
    deadline = time.monotonic() + CLIENT_DEADLINE
    body = {"items": outcome.items}
    async with stack.client(outcome.user) as c:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{outcome.user}: no final answer before the deadline "
                    f"({outcome.attempts} attempts, last {outcome.status})"
                )
            outcome.attempts += 1
            try:
                r = await c.post("/checkout", json=body, headers={"Idempotency-Key": outcome.key}, timeout=15)
            except httpx.HTTPError:
                await _backoff(outcome.attempts, deadline)
                continue
            outcome.status = r.status_code
            if r.status_code in (200, 201):
                order = r.json()
                outcome.order_id, outcome.order_status = order["order_id"], order["status"]
                payment_url = order.get("payment_url")
                break
            if r.status_code in (409, 422):
                problem = r.json()
                outcome.order_id, outcome.reason = problem.get("order_id"), problem.get("reason")
                return outcome
            await _backoff(outcome.attempts, deadline)  # 202 (still queued), 429, 5xx: ask again, same key
    if pay and outcome.order_status == "PENDING" and payment_url:
        attempt = 0
        while True:
            attempt += 1
            try:
                await pay_with_simulator(payment_url)
                outcome.paid = True
                break
            except (httpx.HTTPError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                await _backoff(attempt, deadline)
    return outcome


@dataclass
class Sale:
    stack: Stack
    ticket_types: list[str]
    capacity: int
    outcomes: list[Outcome]
    tasks: list[asyncio.Task[Outcome]]
    second_wave: asyncio.Event

    def decided(self) -> int:
        return sum(1 for t in self.tasks if t.done())


async def start_sale(
    stack: Stack, buyers: int = 60, capacity: int = 20, pay_ratio: float = 0.6, spread: float = 4.0
) -> Sale:
    event = await stack.create_event(
        capacity=capacity, per_user_limit=4, hold_seconds=HOLD_SECONDS, price=50_000, extra_types=1
    )
    types = [t["ticket_type_id"] for t in event["ticket_types"]]
    rng = random.Random(buyers * 7919 + capacity)
    outcomes = []
    for i in range(buyers):
        chosen = rng.sample(types, rng.choice((1, 1, 2)))
        items = [{"ticket_type_id": t, "quantity": rng.choice((1, 2))} for t in chosen]
        outcomes.append(Outcome(user=f"buyer-{i}-{uuid.uuid4().hex[:6]}", key=f"key-{uuid.uuid4()}", items=items))
    # The first 40 % arrive at once; the rest when the fault begins, so it always lands mid-sale.
    second_wave = asyncio.Event()
    tasks = [
        asyncio.create_task(
            buy(
                stack,
                o,
                rng.random() < pay_ratio,
                second_wave if i >= buyers * 2 // 5 else None,
                rng.uniform(0, spread),
            )
        )
        for i, o in enumerate(outcomes)
    ]
    return Sale(
        stack=stack, ticket_types=types, capacity=capacity, outcomes=outcomes, tasks=tasks, second_wave=second_wave
    )


async def mid_sale(sale: Sale, fault: Callable[[], Awaitable[None]]) -> int:
    """Let part of the sale happen, inject ``fault`` while the rest is in flight, then let every buyer finish."""

    async def some_decided() -> bool:
        return sale.decided() >= len(sale.tasks) // 10

    await eventually(some_decided, timeout=60, interval=0.05, what="the first checkouts answered")
    before = sale.decided()
    sale.second_wave.set()  # the second wave arrives while the fault happens
    await fault()
    await asyncio.gather(*sale.tasks)
    return before


# --- what must hold afterwards ----------------------------------------------------------------------------


async def busy(stack: Stack, services: tuple[str, ...]) -> list[str]:
    """What still holds a message: the outboxes, and each non-empty queue of the run's running ``services``
    (a queue nobody here consumes, e.g. search's when search does not run, fills by design; a hold's delay
    queue holds its expiry timer until the hold ends)."""
    waiting = [
        f"{schema}.outbox"
        for schema in ("inventory", "payment")
        if await stack.db.fetchval(f"SELECT count(*) FROM {schema}.outbox")
    ]
    names = all_queue_names(
        stack.names, (HOLD_SECONDS,), extra=(mailer_notifications(tuple(stack.settings.mailer_retry_delays)),)
    )
    # A connection of its own each time: the broker test's bounce leaves a robust connection reconnecting.
    conn = await aio_pika.connect(stack.settings.rabbitmq_url, timeout=10)
    channel = await conn.channel()
    try:
        for name in names:
            if name[len(stack.settings.prefix) :].split(".", 1)[0] not in services or ".hold-delay" in name:
                continue  # a hold's expiry timer waits in its delay queue by design
            try:
                q = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                channel = await conn.channel()  # not declared by this stack's services
                continue
            if q.declaration_result.message_count:
                waiting.append(f"{name}: {q.declaration_result.message_count}")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 10)
    return waiting


async def assert_sale_adds_up(sale: Sale) -> dict[str, int]:
    stack = sale.stack
    outcomes = sale.outcomes
    for o in outcomes:
        assert o.status in (200, 201, 409, 422), o
        # A 409 from the sold-out gate names no order: the gateway refused it without asking inventory.
        assert o.order_id is not None or (o.status == 409 and o.reason == "sold_out"), o
    held_ids = {o.order_id for o in outcomes if o.status in (200, 201)}
    paid = [o for o in outcomes if o.paid]

    # Every buyer who paid sees the order PAID (as the buyer: the gateway's order status).
    async def all_paid() -> list[str]:
        rows = await stack.db.fetch("SELECT id::text FROM inventory.orders WHERE status = 'PAID'")
        return [r["id"] for r in rows] if len(rows) >= len(paid) else []

    await eventually(all_paid, timeout=90, interval=0.2, what=f"{len(paid)} paid orders")
    # Every ticket email arrived, then nothing is left in flight that could send another.
    await eventually(lambda: _emails_at_least(stack, paid), timeout=90, interval=0.2, what="ticket emails")
    services = tuple(stack.supervisor.services)

    async def quiet() -> bool:
        return not await busy(stack, services)

    try:
        await eventually(quiet, timeout=60, interval=0.3, what="no message left in flight")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still holding messages: {await busy(stack, services)}") from None

    for o in paid:
        async with stack.client(o.user) as c:
            shown = (await c.get(f"/orders/{o.order_id}")).json()
        assert shown["status"] == "PAID", (o, shown)

    # Decided, never lost: each answer is what the database says, and nothing else was recorded.
    rows = {str(r["id"]): r for r in await stack.db.fetch("SELECT id, user_id, status FROM inventory.orders")}
    told = {o.order_id for o in outcomes if o.order_id is not None}
    assert told <= set(rows), "an order a buyer was told of is lost"
    # The only orders no answer named: a gate-refused buyer's earlier try, decided (as sold out) after the retry.
    gated = {o.user for o in outcomes if o.order_id is None}
    untold = [rows[i] for i in set(rows) - told]
    assert all(r["user_id"] in gated and r["status"] == "REJECTED" for r in untold), untold
    for o in outcomes:
        if o.order_id is None:
            continue
        row = rows[o.order_id]
        assert row["user_id"] == o.user
        if o.order_id in held_ids:
            assert row["status"] == ("PAID" if o.paid else o.order_status), (o, row["status"])
            assert row["status"] in ("PENDING", "PAID")
        else:
            assert row["status"] == "REJECTED" and o.reason == "sold_out", (o, row["status"])

    # Stock: within capacity, and exactly what the orders hold and sold.
    for tt in sale.ticket_types:
        capacity, held, sold = await stack.stock(tt)
        by_status = dict(
            await stack.db.fetch(
                "SELECT o.status, sum(i.quantity) FROM inventory.order_items i"
                " JOIN inventory.orders o ON o.id = i.order_id"
                " WHERE i.ticket_type_id = $1 GROUP BY o.status",
                uuid.UUID(tt),
            )
        )
        assert held + sold <= capacity == sale.capacity
        assert held == by_status.get("PENDING", 0), (tt, held, by_status)
        assert sold == by_status.get("PAID", 0), (tt, sold, by_status)

    # Each payment applied once: one transaction per order and per txn_ref, one settlement, the right tickets.
    per_order = Counter(str(r["order_id"]) for r in await stack.db.fetch("SELECT order_id FROM payment.transactions"))
    per_ref = Counter(r["txn_ref"] for r in await stack.db.fetch("SELECT txn_ref FROM payment.transactions"))
    settled = Counter(str(r["order_id"]) for r in await stack.db.fetch("SELECT order_id FROM inventory.order_payments"))
    paid_ids = {o.order_id for o in paid}
    assert set(per_order) == paid_ids and set(per_order.values()) <= {1}, per_order
    assert set(per_ref.values()) <= {1}, per_ref
    assert set(settled) == paid_ids and set(settled.values()) <= {1}, settled
    tickets = Counter(str(r["order_id"]) for r in await stack.db.fetch("SELECT order_id FROM inventory.tickets"))
    for o in paid:
        assert tickets[o.order_id] == sum(i["quantity"] for i in o.items), o  # type: ignore[index]

    # Each ticket email sent once (the SMTP server counts what it was asked to deliver, per recipient).
    attempts = stack.smtp.handler.attempts
    for o in outcomes:
        assert attempts[f"{o.user}@example.com"] == (1 if o.paid else 0), (o, attempts[f"{o.user}@example.com"])
    return {
        "buyers": len(outcomes),
        "held": len(held_ids),
        "paid": len(paid),
        "rejected": len(outcomes) - len(held_ids),
        "retries": sum(o.attempts - 1 for o in outcomes),
    }


async def _emails_at_least(stack: Stack, paid: list[Outcome]) -> bool:
    return all(stack.smtp.handler.attempts[f"{o.user}@example.com"] >= 1 for o in paid)


# --- the faults -------------------------------------------------------------------------------------------


def kill(fs: FaultStack, service: str) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        proc = fs.supervisor.procs[service]
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)

        async def restarted() -> bool:  # the supervisor's watch spawned a new process
            new = fs.supervisor.procs[service]
            return new is not proc and new.poll() is None

        await eventually(restarted, timeout=15, what=f"{service} restarted by the supervisor")

    return fault


async def run_fault(fs: FaultStack, fault: Callable[[FaultStack], Callable[[], Awaitable[None]]]) -> None:
    sale = await start_sale(fs.stack)
    before = await mid_sale(sale, fault(fs))
    summary = {**await assert_sale_adds_up(sale), "decided_before_fault": before}
    assert summary["paid"] > 0 and summary["rejected"] > 0, summary  # the sale really sold out, and people paid
    print(f"sale: {summary}")


async def test_sigkill_inventory_mid_sale_loses_no_checkout(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with own_stack(server_settings, monkeypatch) as fs:
        await run_fault(fs, lambda fs: kill(fs, "inventory"))


@pytest.mark.slow
@pytest.mark.parametrize("service", ["payment", "gateway", "mailer"])
async def test_sigkill_service_mid_sale_loses_no_checkout(
    service: str, server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with own_stack(server_settings, monkeypatch) as fs:
        await run_fault(fs, lambda fs: kill(fs, service))


@pytest.mark.slow
async def test_broker_app_stopped_and_started_mid_sale(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bounce(fs: FaultStack) -> Callable[[], Awaitable[None]]:
        node = fs.node
        assert node is not None

        async def fault() -> None:
            await asyncio.to_thread(node.stop_app)
            await asyncio.to_thread(node.start_app)

        return fault

    async with own_stack(server_settings, monkeypatch, own_broker=True) as fs:
        await run_fault(fs, bounce)


@pytest.mark.slow
async def test_postgres_backends_terminated_mid_sale(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def terminate(fs: FaultStack) -> Callable[[], Awaitable[None]]:
        database = make_url(fs.stack.settings.database_url).database

        async def fault() -> None:
            killed = 0
            for _ in range(3):  # three rounds, so connections opened after the first are cut too
                killed += await fs.stack.db.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid() AND application_name <> $2",
                    database,
                    TEST_APP,
                )
                await asyncio.sleep(0.3)  # the fault's own pacing
            assert killed > 0, "no backend of the services was terminated"

        return fault

    async with own_stack(server_settings, monkeypatch) as fs:
        await run_fault(fs, terminate)


@pytest.mark.slow
async def test_redis_flushed_mid_sale(server_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def flush(fs: FaultStack) -> Callable[[], Awaitable[None]]:
        async def fault() -> None:
            # The shared Redis is never flushed: the run's own keys (its prefix) are all it has, so deleting them
            # is what FLUSHDB would do to a Redis of its own.
            r = aioredis.from_url(fs.stack.settings.redis_url)
            deleted = 0
            try:
                async for key in r.scan_iter(match=f"{fs.stack.settings.prefix}*", count=1000):
                    deleted += await r.delete(key)
            finally:
                await r.aclose()
            assert deleted > 0, "the run had no Redis keys to flush"

        return fault

    async with own_stack(server_settings, monkeypatch) as fs:
        await run_fault(fs, flush)
