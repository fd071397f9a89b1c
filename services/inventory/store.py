"""Inventory SQL. Every function takes an open connection inside the caller's transaction; the repositories at
the end (``Orders``, ``Stock``) are what a unit of work binds to that connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.domain import Event, Order, StockEffect, StockLevel
from shared.db import fetch
from shared.messages import (
    CreateEvent,
    EventInfo,
    NewTicketType,
    OrderStatus,
    OrderView,
    PricedLine,
    StockChanged,
    TicketTypeInfo,
)
from shared.read_api import ORDER_COLUMNS, event_fields, fetch_event, order_view, ticket_type_fields
from shared.uow import Clock

# The statements of the hold path are module constants in asyncpg's parameter style, run by ``shared.db.fetch``
# straight on the asyncpg connection inside the transaction: no ``text()`` construct, no compilation cache key,
# no SQLAlchemy execution per call.
_STOCK_COLUMNS = """
    t.id, t.event_id, t.price, t.capacity, t.held, t.sold, t.per_user_limit, e.hold_seconds, e.starts_at, e.status,
    t.stock_version
"""
_LOCK_STOCK = (
    f"SELECT {_STOCK_COLUMNS} FROM inventory.ticket_types t JOIN inventory.events e ON e.id = t.event_id "
    "WHERE t.id = ANY(CAST($1 AS uuid[])) ORDER BY t.id FOR UPDATE OF t"
)
_LOAD_HOLDINGS = (
    "SELECT h.user_id, h.ticket_type_id, h.quantity FROM inventory.user_holdings h "
    "JOIN unnest(CAST($1 AS text[]), CAST($2 AS uuid[])) AS p(user_id, tt) "
    "ON h.user_id = p.user_id AND h.ticket_type_id = p.tt"
)
# Which of a batch's order ids exist already, and the transaction's clock, in one round trip (one row with a
# NULL id when none exists, the common case).
_EXISTING_IDS = (
    "SELECT now() AS now, o.id, o.request_hash FROM (VALUES (1)) AS one(x) "
    "LEFT JOIN inventory.orders o ON o.id = ANY(CAST($1 AS uuid[]))"
)
_EXISTING_VIEWS = f"SELECT {ORDER_COLUMNS} FROM read_api.orders WHERE id = ANY(CAST($1 AS uuid[]))"
# A batch's orders and the held ones' items in one statement. The items' foreign key to the orders is checked
# at the end of the statement, after both inserts; a repeated order id fails the whole statement (primary key),
# items included.
_INSERT_ORDERS = (
    "WITH o AS (INSERT INTO inventory.orders (id, user_id, user_email, locale, event_id, status, total, reason, "
    "detail, request_hash, expires_at, created_at, updated_at) "
    "SELECT id, user_id, user_email, locale, event_id, status, total, reason, detail, request_hash, expires_at, "
    "created_at, created_at FROM unnest(CAST($1 AS uuid[]), CAST($2 AS text[]), CAST($3 AS text[]), "
    "CAST($4 AS text[]), CAST($5 AS uuid[]), CAST($6 AS text[]), CAST($7 AS bigint[]), CAST($8 AS text[]), "
    "CAST($9 AS text[]), CAST($10 AS text[]), CAST($11 AS timestamptz[]), CAST($12 AS timestamptz[])) "
    "AS d(id, user_id, user_email, locale, event_id, status, total, reason, detail, request_hash, expires_at, "
    "created_at)) "
    "INSERT INTO inventory.order_items (order_id, ticket_type_id, quantity, unit_price) "
    "SELECT * FROM unnest(CAST($13 AS uuid[]), CAST($14 AS uuid[]), CAST($15 AS int[]), CAST($16 AS bigint[]))"
)
# The counters of (already locked) ticket types and the buyers' holdings, moved in one statement; the keys of
# the added and the released holdings are disjoint. The tables' CHECKs refuse any oversell or negative holding.
_APPLY_STOCK = (
    "WITH s AS (UPDATE inventory.ticket_types t "
    "SET held = t.held + d.dh, sold = t.sold + d.ds, stock_version = t.stock_version + 1 "
    "FROM unnest(CAST($1 AS uuid[]), CAST($2 AS int[]), CAST($3 AS int[])) AS d(id, dh, ds) "
    "WHERE t.id = d.id RETURNING t.id, t.event_id, t.capacity, t.held, t.sold, t.stock_version), "
    "a AS (INSERT INTO inventory.user_holdings (user_id, ticket_type_id, quantity) "
    "SELECT * FROM unnest(CAST($4 AS text[]), CAST($5 AS uuid[]), CAST($6 AS int[])) "
    "ON CONFLICT (user_id, ticket_type_id) "
    "DO UPDATE SET quantity = inventory.user_holdings.quantity + EXCLUDED.quantity), "
    "r AS (UPDATE inventory.user_holdings h SET quantity = h.quantity - d.q "
    "FROM unnest(CAST($7 AS text[]), CAST($8 AS uuid[]), CAST($9 AS int[])) AS d(u, tt, q) "
    "WHERE h.user_id = d.u AND h.ticket_type_id = d.tt) "
    "SELECT id AS ticket_type_id, event_id, capacity, held, sold, stock_version FROM s ORDER BY id"
)


async def now(conn: AsyncConnection) -> datetime:
    """The transaction's clock (one clock for every service: the database's)."""
    return (await conn.execute(text("SELECT now()"))).scalar_one()  # type: ignore[no-any-return]


async def lock_stock(conn: AsyncConnection, ticket_type_ids: Iterable[UUID]) -> dict[UUID, StockLevel]:
    """Lock the ticket types (in id order, so concurrent batches never deadlock) and read their stock."""
    rows = await fetch(conn, _LOCK_STOCK, sorted(set(ticket_type_ids)))
    return {r["id"]: StockLevel(*tuple(r.values())) for r in rows}


async def load_holdings(conn: AsyncConnection, pairs: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]:
    pairs = sorted(set(pairs))
    if not pairs:
        return {}
    rows = await fetch(conn, _LOAD_HOLDINGS, [p[0] for p in pairs], [p[1] for p in pairs])
    return {(r["user_id"], r["ticket_type_id"]): r["quantity"] for r in rows}


async def existing_orders(conn: AsyncConnection, order_ids: Iterable[UUID]) -> dict[UUID, tuple[OrderView, str]]:
    """Orders that already exist, with the hash of the request that created them."""
    rows = await conn.execute(
        text(f"SELECT {ORDER_COLUMNS} FROM read_api.orders WHERE id = ANY(:ids)"),
        {"ids": list(set(order_ids))},
    )
    return {r.id: (order_view(r), r.request_hash) for r in rows}


async def existing_orders_and_now(
    conn: AsyncConnection, order_ids: Iterable[UUID], clock: Clock
) -> dict[UUID, tuple[OrderView, str]]:
    """``existing_orders``, reading the transaction's clock into ``clock`` in the same round trip; the views
    (the read_api view aggregates the items) are read only for ids that exist."""
    rows = await fetch(conn, _EXISTING_IDS, list(set(order_ids)))
    clock.value = rows[0]["now"]
    found = [r["id"] for r in rows if r["id"] is not None]
    if not found:
        return {}
    views = await conn.exec_driver_sql(_EXISTING_VIEWS, (found,))
    return {r.id: (order_view(r), r.request_hash) for r in views}


async def get_order(conn: AsyncConnection, order_id: UUID) -> OrderView | None:
    found = await existing_orders(conn, [order_id])
    return found[order_id][0] if order_id in found else None


async def insert_orders(conn: AsyncConnection, orders: Sequence[Order], request_hashes: Sequence[str]) -> None:
    """Insert a batch's newly decided orders (PENDING or REJECTED) and the held ones' items: one statement."""
    if not orders:
        return
    items = [(o.id, line) for o in orders for line in o.lines]
    await fetch(
        conn,
        _INSERT_ORDERS,
        *(
            [o.id for o in orders],
            [o.user_id for o in orders],
            [o.user_email for o in orders],
            [o.locale for o in orders],
            [o.event_id for o in orders],
            [o.status.value for o in orders],
            [o.total for o in orders],
            [o.reason.value if o.reason else None for o in orders],
            [o.detail for o in orders],
            list(request_hashes),
            [o.expires_at for o in orders],
            [o.created_at for o in orders],
            [order_id for order_id, _ in items],
            [line.ticket_type_id for _, line in items],
            [line.quantity for _, line in items],
            [line.unit_price for _, line in items],
        ),
    )
    for o in orders:
        o.loaded_status = o.status


async def apply_stock(
    conn: AsyncConnection,
    held: dict[UUID, int],
    sold: dict[UUID, int],
    holdings: dict[tuple[str, UUID], int],
) -> list[StockChanged]:
    """Move held/sold counters of already-locked rows and the buyers' holdings (positive deltas added, negative
    ones released) in one statement; returns the new levels, in ticket-type id order."""
    ids = sorted(set(held) | set(sold))
    added = sorted(k for k, q in holdings.items() if q > 0)
    released = sorted(k for k, q in holdings.items() if q < 0)
    rows = await fetch(
        conn,
        _APPLY_STOCK,
        *(
            ids,
            [held.get(i, 0) for i in ids],
            [sold.get(i, 0) for i in ids],
            [k[0] for k in added],
            [k[1] for k in added],
            [holdings[k] for k in added],
            [k[0] for k in released],
            [k[1] for k in released],
            [-holdings[k] for k in released],
        ),
    )
    return [StockChanged(**r) for r in rows]  # the statement names its columns as the message's fields


async def seconds_until(conn: AsyncConnection, moment: datetime) -> float:
    """Seconds from the database's clock to ``moment`` (negative when past): one clock for every service."""
    return float(await conn.scalar(text("SELECT EXTRACT(EPOCH FROM CAST(:t AS timestamptz) - now())"), {"t": moment}))


async def still_pending(conn: AsyncConnection, order_ids: Sequence[UUID]) -> list[UUID]:
    rows = await conn.execute(
        text("SELECT id FROM inventory.orders WHERE id = ANY(:ids) AND status = 'PENDING' ORDER BY id"),
        {"ids": list(order_ids)},
    )
    return [r.id for r in rows]


# --- catalog ---------------------------------------------------------------------------------------


async def insert_event(conn: AsyncConnection, cmd: CreateEvent) -> bool:
    """Create the event (idempotent on its id). Returns False when it already existed."""
    row = await conn.execute(
        text(
            "INSERT INTO inventory.events (id, title, venue, city, starts_at, description, hold_seconds) "
            "VALUES (:id, :title, :venue, :city, :starts_at, :description, :hold_seconds) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        {
            "id": cmd.event_id,
            "title": cmd.title,
            "venue": cmd.venue,
            "city": cmd.city,
            "starts_at": cmd.starts_at,
            "description": cmd.description,
            "hold_seconds": cmd.hold_seconds,
        },
    )
    return row.first() is not None


async def insert_ticket_types(conn: AsyncConnection, event_id: UUID, types: Sequence[NewTicketType]) -> None:
    if not types:
        return
    await conn.execute(
        text(
            "INSERT INTO inventory.ticket_types (id, event_id, name, price, capacity, per_user_limit) "
            "VALUES (:id, :event_id, :name, :price, :capacity, :per_user_limit) ON CONFLICT (id) DO NOTHING"
        ),
        [
            {
                "id": t.ticket_type_id,
                "event_id": event_id,
                "name": t.name,
                "price": t.price,
                "capacity": t.capacity,
                "per_user_limit": t.per_user_limit,
            }
            for t in types
        ],
    )
    await conn.execute(text("UPDATE inventory.events SET updated_at = now() WHERE id = :id"), {"id": event_id})


async def event_exists(conn: AsyncConnection, event_id: UUID) -> bool:
    row = await conn.execute(text("SELECT 1 FROM inventory.events WHERE id = :id"), {"id": event_id})
    return row.first() is not None


async def load_event_info(conn: AsyncConnection, event_id: UUID) -> EventInfo | None:
    """The event as published in catalog events (read through inventory's own read_api views)."""
    found = await fetch_event(conn, event_id)
    if found is None:
        return None
    ev, types = found
    return EventInfo(**event_fields(ev), ticket_types=[TicketTypeInfo(**ticket_type_fields(t)) for t in types])


# --- repositories ------------------------------------------------------------------------------------

_ORDER_FIELDS = "o.id, o.user_id, o.user_email, o.locale, o.status, o.total, o.event_id, o.expires_at, o.created_at"


class Orders:
    """Orders as aggregates: loaded locked, saved with each status change guarded by the status loaded."""

    def __init__(self, conn: AsyncConnection, clock: Clock | None = None) -> None:
        self.conn = conn
        self.clock = clock if clock is not None else Clock()

    async def add(self, orders: Sequence[Order], request_hashes: Sequence[str]) -> None:
        await insert_orders(self.conn, orders, request_hashes)

    async def existing(self, order_ids: Iterable[UUID]) -> dict[UUID, tuple[OrderView, str]]:
        """Orders that already exist, with the hash of the request that created them; reads the transaction's
        clock (``uow.now()``) in the same round trip."""
        return await existing_orders_and_now(self.conn, order_ids, self.clock)

    async def view(self, order_id: UUID) -> OrderView | None:
        return await get_order(self.conn, order_id)

    async def lock(self, order_id: UUID) -> Order | None:
        found = await self._load(
            f"SELECT {_ORDER_FIELDS} FROM inventory.orders o WHERE o.id = :id FOR UPDATE", {"id": order_id}
        )
        return found[0] if found else None

    async def lock_pending(self, order_ids: Sequence[UUID], *, due_only: bool) -> list[Order]:
        """PENDING orders among ``order_ids`` (only those past their expiry when ``due_only``), locked in id
        order so that concurrent releases never deadlock."""
        due = "AND o.expires_at <= now()" if due_only else ""
        return await self._load(
            f"SELECT {_ORDER_FIELDS} FROM inventory.orders o WHERE o.id = ANY(:ids) AND o.status = 'PENDING' {due} "
            "ORDER BY o.id FOR UPDATE",
            {"ids": list(order_ids)},
        )

    async def lock_overdue(self, limit: int) -> list[Order]:
        """The oldest overdue PENDING orders, skipping rows another transaction holds (the sweeper)."""
        return await self._load(
            f"SELECT {_ORDER_FIELDS} FROM inventory.orders o WHERE o.status = 'PENDING' AND o.expires_at <= now() "
            "ORDER BY o.expires_at LIMIT :n FOR UPDATE SKIP LOCKED",
            {"n": limit},
        )

    async def lock_for_event(self, event_id: UUID, statuses: Sequence[OrderStatus], limit: int) -> list[Order]:
        """The event's first ``limit`` orders in ``statuses``, locked in id order (a cancellation's batch; the
        orders' (event_id, status, id) index serves it)."""
        return await self._load(
            f"SELECT {_ORDER_FIELDS} FROM inventory.orders o WHERE o.event_id = :event AND o.status = ANY(:statuses) "
            "ORDER BY o.id LIMIT :n FOR UPDATE",
            {"event": event_id, "statuses": [s.value for s in statuses], "n": limit},
        )

    async def count_for_event(self, event_id: UUID) -> dict[OrderStatus, int]:
        rows = await self.conn.execute(
            text("SELECT status, count(*) AS n FROM inventory.orders WHERE event_id = :event GROUP BY status"),
            {"event": event_id},
        )
        return {OrderStatus(r.status): int(r.n) for r in rows}

    async def _load(self, sql: str, params: dict[str, Any]) -> list[Order]:
        rows = (await self.conn.execute(text(sql), params)).all()
        if not rows:
            return []
        items = await self.conn.execute(
            text(
                "SELECT order_id, ticket_type_id, quantity, unit_price FROM inventory.order_items "
                "WHERE order_id = ANY(:ids) ORDER BY order_id, ticket_type_id"
            ),
            {"ids": [r.id for r in rows]},
        )
        lines: dict[UUID, list[PricedLine]] = {r.id: [] for r in rows}
        for it in items:
            lines[it.order_id].append(
                PricedLine(ticket_type_id=it.ticket_type_id, quantity=it.quantity, unit_price=it.unit_price)
            )
        return [
            Order(
                id=r.id,
                user_id=r.user_id,
                user_email=r.user_email,
                locale=r.locale,
                status=OrderStatus(r.status),
                total=r.total,
                lines=tuple(lines[r.id]),
                event_id=r.event_id,
                expires_at=r.expires_at,
                created_at=r.created_at,
            )
            for r in rows
        ]

    async def save(self, orders: Sequence[Order]) -> None:
        """Write each changed status with one UPDATE guarded by the status the order was loaded in."""
        changed = [o for o in orders if o.status is not o.loaded_status]
        if not changed:
            return
        result = await self.conn.execute(
            text(
                "UPDATE inventory.orders o SET status = d.new, updated_at = now() "
                "FROM unnest(CAST(:ids AS uuid[]), CAST(:new AS text[]), CAST(:old AS text[])) AS d(id, new, old) "
                "WHERE o.id = d.id AND o.status = d.old"
            ),
            {
                "ids": [o.id for o in changed],
                "new": [o.status.value for o in changed],
                "old": [o.loaded_status.value for o in changed if o.loaded_status is not None],
            },
        )
        if result.rowcount != len(changed):  # type: ignore[attr-defined]
            raise RuntimeError("an order changed under its row lock")  # cannot happen; retried if it does
        for o in changed:
            o.loaded_status = o.status


class Stock:
    """Ticket-type counters and the buyers' per-type holdings."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def lock(self, ticket_type_ids: Iterable[UUID]) -> dict[UUID, StockLevel]:
        return await lock_stock(self.conn, ticket_type_ids)

    async def holdings(self, pairs: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]:
        return await load_holdings(self.conn, pairs)

    async def apply(self, effect: StockEffect, *, locked: bool = False) -> list[StockChanged]:
        """Move the counters (their rows locked in id order first, unless ``locked`` already) and the holdings;
        returns the new levels."""
        if not effect.ticket_type_ids and not effect.holdings:
            return []
        if not locked:
            await lock_stock(self.conn, effect.ticket_type_ids)
        return await apply_stock(self.conn, effect.held, effect.sold, effect.holdings)


class Events:
    """Events as their cancellation sees them: status and the durable progress of its batches."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    _FIELDS = "id, status, cancel_batches, orders_cancelled, orders_sent_to_refund, cancelled_by"

    async def lock(self, event_id: UUID) -> Event | None:
        row = (
            await self.conn.execute(
                text(f"SELECT {self._FIELDS} FROM inventory.events WHERE id = :id FOR UPDATE"), {"id": event_id}
            )
        ).first()
        return Event(**row._mapping) if row else None

    async def cancelling(self, idle_seconds: float) -> list[UUID]:
        """Events being cancelled whose last batch is older than ``idle_seconds`` (0: all of them)."""
        rows = await self.conn.execute(
            text(
                "SELECT id FROM inventory.events WHERE status = 'CANCELLING' "
                "AND updated_at <= now() - make_interval(secs => CAST(:idle AS double precision)) ORDER BY id"
            ),
            {"idle": idle_seconds},
        )
        return [r.id for r in rows]

    async def ticket_type_ids(self, event_id: UUID) -> list[UUID]:
        rows = await self.conn.execute(
            text("SELECT id FROM inventory.ticket_types WHERE event_id = :id ORDER BY id"), {"id": event_id}
        )
        return [r.id for r in rows]

    async def save(self, event: Event) -> None:
        """Write the status (guarded by the status loaded) and the progress counters."""
        result = await self.conn.execute(
            text(
                "UPDATE inventory.events SET status = :status, cancel_batches = :batches, "
                "orders_cancelled = :cancelled, orders_sent_to_refund = :refunding, cancelled_by = :by, "
                "cancel_requested_at = CASE WHEN :status = 'CANCELLING' AND cancel_requested_at IS NULL "
                "  THEN now() ELSE cancel_requested_at END, "
                "cancelled_at = CASE WHEN :status = 'CANCELLED' THEN now() ELSE cancelled_at END, "
                "updated_at = now() WHERE id = :id AND status = :loaded"
            ),
            {
                "id": event.id,
                "status": event.status.value,
                "loaded": (event.loaded_status or event.status).value,
                "batches": event.cancel_batches,
                "cancelled": event.orders_cancelled,
                "refunding": event.orders_sent_to_refund,
                "by": event.cancelled_by,
            },
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise RuntimeError("an event changed under its row lock")  # cannot happen; retried if it does
        event.loaded_status = event.status

    async def cancelled_at(self, event_id: UUID) -> datetime:
        return (  # type: ignore[no-any-return]
            await self.conn.execute(
                text("SELECT COALESCE(cancel_requested_at, now()) FROM inventory.events WHERE id = :id"),
                {"id": event_id},
            )
        ).scalar_one()


class Catalog:
    """Events and their ticket types."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add_event(self, cmd: CreateEvent) -> bool:
        """Create the event with its ticket types; False when this event id exists already (a repeat)."""
        if not await insert_event(self.conn, cmd):
            return False
        await insert_ticket_types(self.conn, cmd.event_id, cmd.ticket_types)
        return True

    async def add_ticket_types(self, event_id: UUID, types: Sequence[NewTicketType]) -> bool:
        """False when there is no such event."""
        if not await event_exists(self.conn, event_id):
            return False
        await insert_ticket_types(self.conn, event_id, types)
        return True

    async def event(self, event_id: UUID) -> EventInfo | None:
        return await load_event_info(self.conn, event_id)
