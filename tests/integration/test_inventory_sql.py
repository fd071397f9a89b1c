"""Inventory's combined statements and the outbox's SQL against the run's real PostgreSQL: each keeps the
guarantee of the statements it replaced (all or nothing, the CHECKs, ids in emission order, at-least-once)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory import store
from services.inventory.domain import Order
from shared import outbox
from shared.db import fetch, make_engine
from shared.messages import OrderStatus, PricedLine, RejectReason
from shared.messaging import Bus
from shared.outbox import OutboxRelay, Outgoing
from shared.uow import Clock
from tests.harness import Stack

# A statement run through SQLAlchemy (the first of a transaction) raises SQLAlchemy's error; one run straight on
# asyncpg (``shared.db.fetch`` inside the transaction) raises asyncpg's.
CONSTRAINT_ERRORS = (exc.IntegrityError, asyncpg.IntegrityConstraintViolationError)


@pytest.fixture
async def engine(stack: Stack) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(stack.settings.database_url, pool_size=3)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _ticket_type(stack: Stack, capacity: int) -> tuple[uuid.UUID, uuid.UUID]:
    event = await stack.create_event(capacity=capacity, per_user_limit=capacity)
    return uuid.UUID(event["event_id"]), uuid.UUID(event["ticket_types"][0]["ticket_type_id"])


def _held(event_id: uuid.UUID, tt: uuid.UUID, quantity: int, now: Any) -> Order:
    order = Order(
        id=uuid.uuid4(), user_id="sql-buyer", user_email="b@example.com", locale="vi", status=OrderStatus.PENDING
    )
    order.lines = (PricedLine(ticket_type_id=tt, quantity=quantity, unit_price=100_000),)
    order.total, order.event_id, order.created_at = 100_000 * quantity, event_id, now
    order.expires_at = now.replace(year=now.year + 1)  # never due for the running stack's sweeper
    return order


def _rejected(now: Any) -> Order:
    order = Order(id=uuid.uuid4(), user_id="sql-buyer", user_email="", locale="en", status=OrderStatus.REJECTED)
    order.reason, order.detail, order.created_at = RejectReason.SOLD_OUT, "sold out", now
    return order


async def test_orders_and_items_in_one_statement_all_or_nothing(stack: Stack, engine: AsyncEngine) -> None:
    event_id, tt = await _ticket_type(stack, capacity=10)
    async with engine.begin() as conn:
        now = await conn.scalar(text("SELECT now()"))
        held, rejected = _held(event_id, tt, 2, now), _rejected(now)
        await store.insert_orders(conn, [held, rejected], ["hash-held", "hash-rejected"])
    rows = await stack.db.fetch(
        "SELECT id, status, total, reason, request_hash, created_at, updated_at FROM inventory.orders "
        "WHERE id = ANY($1)",
        [held.id, rejected.id],
    )
    by_id = {r["id"]: r for r in rows}
    assert by_id[held.id]["status"] == OrderStatus.PENDING.value and by_id[held.id]["total"] == 200_000
    assert by_id[rejected.id]["status"] == OrderStatus.REJECTED.value
    assert by_id[rejected.id]["reason"] == RejectReason.SOLD_OUT.value
    assert by_id[held.id]["request_hash"] == "hash-held"
    assert all(r["created_at"] == r["updated_at"] == now for r in rows)
    items = await stack.db.fetch(
        "SELECT order_id, ticket_type_id, quantity, unit_price FROM inventory.order_items WHERE order_id = ANY($1)",
        [held.id, rejected.id],
    )
    assert [tuple(i) for i in items] == [(held.id, tt, 2, 100_000)]

    # The existing-orders check reads the transaction's clock in the same statement, and the views of the
    # ids that exist only.
    async with engine.begin() as conn:
        clock = Clock()
        unknown = uuid.uuid4()
        found = await store.Orders(conn, clock).existing([held.id, rejected.id, unknown])
        assert clock.value == await conn.scalar(text("SELECT now()"))
        assert set(found) == {held.id, rejected.id}
        assert found[held.id][1] == "hash-held" and found[held.id][0].items[0].quantity == 2
        assert await store.Orders(conn, clock).existing([unknown]) == {}

    # A repeated order id (a redelivery decided twice) fails the whole statement: the new order's row and its
    # items are not written either.
    fresh = _held(event_id, tt, 1, now)
    with pytest.raises(CONSTRAINT_ERRORS):
        async with engine.begin() as conn:
            await store.insert_orders(conn, [fresh, held], ["hash-fresh", "hash-held"])
    assert await stack.db.fetchval("SELECT count(*) FROM inventory.orders WHERE id = $1", fresh.id) == 0
    assert await stack.db.fetchval("SELECT count(*) FROM inventory.order_items WHERE order_id = $1", fresh.id) == 0


async def test_counters_and_holdings_in_one_statement_keep_the_checks(stack: Stack, engine: AsyncEngine) -> None:
    _, tt = await _ticket_type(stack, capacity=5)

    async def holdings() -> dict[str, int]:
        rows = await stack.db.fetch(
            "SELECT user_id, quantity FROM inventory.user_holdings WHERE ticket_type_id = $1", tt
        )
        return {r["user_id"]: r["quantity"] for r in rows}

    async with engine.begin() as conn:
        await store.lock_stock(conn, [tt])
        changed = await store.apply_stock(conn, {tt: 3}, {}, {("u1", tt): 2, ("u2", tt): 1})
    assert [(c.ticket_type_id, c.held, c.sold) for c in changed] == [(tt, 3, 0)]
    assert await holdings() == {"u1": 2, "u2": 1}

    # Added and released holdings in the same statement, with held moving to sold.
    async with engine.begin() as conn:
        await store.lock_stock(conn, [tt])
        changed = await store.apply_stock(conn, {tt: -1}, {tt: 1}, {("u1", tt): -1, ("u3", tt): 1, ("u2", tt): 1})
    assert [(c.held, c.sold) for c in changed] == [(2, 1)]
    assert await holdings() == {"u1": 1, "u2": 2, "u3": 1}

    # An oversell is refused by the table's CHECK, and the holdings of the same statement are not written.
    with pytest.raises(CONSTRAINT_ERRORS):
        async with engine.begin() as conn:
            await store.lock_stock(conn, [tt])
            await store.apply_stock(conn, {tt: 3}, {}, {("u4", tt): 3})
    assert await stack.stock(str(tt)) == (5, 2, 1)
    assert await holdings() == {"u1": 1, "u2": 2, "u3": 1}

    # A release below zero is refused too, and the counters of the same statement do not move.
    with pytest.raises(CONSTRAINT_ERRORS):
        async with engine.begin() as conn:
            await store.lock_stock(conn, [tt])
            await store.apply_stock(conn, {tt: -1}, {}, {("u3", tt): -2})
    assert await stack.stock(str(tt)) == (5, 2, 1)
    assert await holdings() == {"u1": 1, "u2": 2, "u3": 1}


class _Bus:
    """Records what the relay publishes; fails while ``fail`` is set; waits for ``gate`` when given one."""

    def __init__(self, fail: bool = False, gate: asyncio.Event | None = None) -> None:
        self.fail, self.gate = fail, gate
        self.published: list[str] = []
        self.entered = asyncio.Event()

    async def publish_raw(self, body: bytes, routing_key: str, *, message_id: str, **_: Any) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("broker gone")
        self.published.append(message_id)


@pytest.fixture
async def outbox_schema(stack: Stack) -> AsyncIterator[str]:
    """An outbox table of the test's own, shaped as every service's (no running relay drains it)."""
    schema = f"test_outbox_{uuid.uuid4().hex[:8]}"
    await stack.db.execute(
        f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.outbox (LIKE inventory.outbox INCLUDING ALL)"
    )
    try:
        yield schema
    finally:
        await stack.db.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_outbox_one_insert_in_order_and_relay_at_least_once(
    stack: Stack, engine: AsyncEngine, outbox_schema: str
) -> None:
    messages = [
        Outgoing(f"rk-{i}", f"body-{i}".encode(), f"m-{i}", exchange="" if i % 2 else "@events", headers={"i": i})
        for i in range(7)
    ]
    async with engine.begin() as conn:
        await outbox.add(conn, outbox_schema, messages)
    rows = await stack.db.fetch(
        f"SELECT exchange, routing_key, message_id, headers::text AS headers, body FROM {outbox_schema}.outbox "
        "ORDER BY id"
    )
    assert [r["message_id"] for r in rows] == [m.message_id for m in messages]  # ids in emission order
    assert [(r["exchange"], r["routing_key"], bytes(r["body"])) for r in rows] == [
        (m.exchange, m.routing_key, m.body) for m in messages
    ]
    assert rows[3]["headers"] == '{"i": 3}'

    # A publish that fails rolls the deletion back: every row is still there for the next drain.
    with pytest.raises(ConnectionError):
        await OutboxRelay(engine, outbox_schema, cast(Bus, _Bus(fail=True))).drain_once()
    assert await stack.db.fetchval(f"SELECT count(*) FROM {outbox_schema}.outbox") == 7

    # Two relays at once: the rows one has locked (and deleted, uncommitted) are skipped by the other, and
    # every message is published exactly once between them.
    gate = asyncio.Event()
    slow, fast = _Bus(gate=gate), _Bus()
    first = asyncio.create_task(OutboxRelay(engine, outbox_schema, cast(Bus, slow), batch=3).drain_once())
    await asyncio.wait_for(slow.entered.wait(), 10)
    assert await OutboxRelay(engine, outbox_schema, cast(Bus, fast), batch=100).drain_once() == 4
    gate.set()
    assert await first == 3
    assert slow.published == ["m-0", "m-1", "m-2"]
    assert fast.published == [f"m-{i}" for i in range(3, 7)]
    assert await stack.db.fetchval(f"SELECT count(*) FROM {outbox_schema}.outbox") == 0


async def test_raw_statements_run_inside_the_transaction(stack: Stack, engine: AsyncEngine) -> None:
    """``shared.db.fetch`` on a connection not yet in a transaction goes through SQLAlchemy (which sends BEGIN);
    the statements after it run on asyncpg in that same transaction, and roll back with it."""
    _, tt = await _ticket_type(stack, capacity=4)
    async with engine.connect() as conn:
        await conn.begin()
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None and not raw.is_in_transaction()
        first = await fetch(conn, "SELECT txid_current() AS tx")
        assert raw.is_in_transaction()
        await fetch(conn, "UPDATE inventory.ticket_types SET held = held + 1 WHERE id = $1", tt)
        assert (await fetch(conn, "SELECT txid_current() AS tx"))[0]["tx"] == first[0]["tx"]
        await conn.rollback()
    assert await stack.stock(str(tt)) == (4, 0, 0)


async def test_every_change_of_the_counters_moves_the_stock_version(stack: Stack, engine: AsyncEngine) -> None:
    """The sold-out gate orders stock.changed messages by this version: it must rise with each change, be read
    under the row lock, and be what the change's message carries."""
    _, tt = await _ticket_type(stack, capacity=3)
    versions: list[int] = []
    for held, sold in ((2, 0), (-1, 1), (1, 0)):
        async with engine.begin() as conn:
            before = (await store.lock_stock(conn, [tt]))[tt].stock_version
            (changed,) = await store.apply_stock(conn, {tt: held}, {tt: sold}, {})
            assert changed.stock_version == before + 1
            versions.append(changed.stock_version)
    assert versions == sorted(versions) and len(set(versions)) == 3
    async with engine.begin() as conn:
        level = (await store.lock_stock(conn, [tt]))[tt]
    assert (level.held, level.sold, level.stock_version) == (2, 1, versions[-1])
