"""Inventory SQL. Every function takes an open connection inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.domain import Held, Rejected, StockLevel
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
from shared.read_api import ORDER_COLUMNS, fetch_event, order_view

_STOCK_COLUMNS = """
    t.id, t.event_id, t.price, t.capacity, t.held, t.sold, t.per_user_limit, e.hold_seconds, e.starts_at
"""


async def now(conn: AsyncConnection) -> datetime:
    """The transaction's clock (one clock for every service: the database's)."""
    return (await conn.execute(text("SELECT now()"))).scalar_one()  # type: ignore[no-any-return]


async def lock_stock(conn: AsyncConnection, ticket_type_ids: Iterable[UUID]) -> dict[UUID, StockLevel]:
    """Lock the ticket types (in id order, so concurrent batches never deadlock) and read their stock."""
    rows = await conn.execute(
        text(
            f"SELECT {_STOCK_COLUMNS} FROM inventory.ticket_types t JOIN inventory.events e ON e.id = t.event_id "
            "WHERE t.id = ANY(:ids) ORDER BY t.id FOR UPDATE OF t"
        ),
        {"ids": sorted(set(ticket_type_ids))},
    )
    return {r.id: StockLevel(*r) for r in rows}


async def lock_stock_by_items(conn: AsyncConnection, ticket_type_ids: Iterable[UUID]) -> dict[UUID, StockLevel]:
    """The 'pending order items' hold method: held and sold are summed from the orders' items.

    Kept so the benchmark can compare it with the counters in the same run; the row lock is still needed.
    """
    levels = await lock_stock(conn, ticket_type_ids)
    if not levels:
        return levels
    rows = await conn.execute(
        text(
            "SELECT i.ticket_type_id, "
            "  COALESCE(SUM(i.quantity) FILTER (WHERE o.status = 'PENDING'), 0) AS held, "
            "  COALESCE(SUM(i.quantity) FILTER (WHERE o.status = 'PAID'), 0) AS sold "
            "FROM inventory.order_items i JOIN inventory.orders o ON o.id = i.order_id "
            "WHERE i.ticket_type_id = ANY(:ids) GROUP BY i.ticket_type_id"
        ),
        {"ids": list(levels)},
    )
    for r in rows:
        levels[r.ticket_type_id].held = int(r.held)
        levels[r.ticket_type_id].sold = int(r.sold)
    return levels


async def load_holdings(conn: AsyncConnection, pairs: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]:
    pairs = sorted(set(pairs))
    if not pairs:
        return {}
    rows = await conn.execute(
        text(
            "SELECT h.user_id, h.ticket_type_id, h.quantity FROM inventory.user_holdings h "
            "JOIN unnest(CAST(:users AS text[]), CAST(:tts AS uuid[])) AS p(user_id, tt) "
            "ON h.user_id = p.user_id AND h.ticket_type_id = p.tt"
        ),
        {"users": [p[0] for p in pairs], "tts": [p[1] for p in pairs]},
    )
    return {(r.user_id, r.ticket_type_id): r.quantity for r in rows}


async def existing_orders(
    conn: AsyncConnection, order_ids: Iterable[UUID]
) -> dict[UUID, tuple[OrderView, str]]:
    """Orders that already exist, with the hash of the request that created them."""
    rows = await conn.execute(
        text(f"SELECT {ORDER_COLUMNS} FROM read_api.orders WHERE id = ANY(:ids)"),
        {"ids": list(set(order_ids))},
    )
    return {r.id: (order_view(r), r.request_hash) for r in rows}


async def get_order(conn: AsyncConnection, order_id: UUID) -> OrderView | None:
    found = await existing_orders(conn, [order_id])
    return found[order_id][0] if order_id in found else None


@dataclass(frozen=True)
class NewOrder:
    order_id: UUID
    user_id: str
    user_email: str
    locale: str
    request_hash: str


async def insert_decisions(
    conn: AsyncConnection,
    orders: Sequence[NewOrder],
    decisions: Sequence[Held | Rejected],
    now: datetime,
) -> None:
    """Insert the batch's orders (PENDING or REJECTED) and the held orders' items, in bulk."""
    params = []
    items: list[dict[str, Any]] = []
    for o, d in zip(orders, decisions, strict=True):
        held = isinstance(d, Held)
        params.append({
            "id": o.order_id, "user_id": o.user_id, "user_email": o.user_email, "locale": o.locale,
            "event_id": d.event_id if isinstance(d, Held) else None,
            "status": OrderStatus.PENDING.value if held else OrderStatus.REJECTED.value,
            "total": d.total if isinstance(d, Held) else 0,
            "reason": None if held else d.reason.value,  # type: ignore[union-attr]
            "detail": None if held else d.detail,  # type: ignore[union-attr]
            "request_hash": o.request_hash,
            "expires_at": expiry_at(now, d.hold_seconds) if isinstance(d, Held) else None,
            "now": now,
        })
        if isinstance(d, Held):
            items.extend(
                {"order_id": d.order_id, "tt": line.ticket_type_id, "q": line.quantity, "p": line.unit_price}
                for line in d.lines
            )
    await conn.execute(
        text(
            "INSERT INTO inventory.orders (id, user_id, user_email, locale, event_id, status, total, reason, detail, "
            "request_hash, expires_at, created_at, updated_at) VALUES (:id, :user_id, :user_email, :locale, "
            ":event_id, :status, :total, :reason, :detail, :request_hash, :expires_at, :now, :now)"
        ),
        params,
    )
    if items:
        await conn.execute(
            text(
                "INSERT INTO inventory.order_items (order_id, ticket_type_id, quantity, unit_price) "
                "VALUES (:order_id, :tt, :q, :p)"
            ),
            items,
        )


def expiry_at(now: datetime, hold_seconds: int) -> datetime:
    return now + timedelta(seconds=hold_seconds)


async def add_holdings(conn: AsyncConnection, deltas: dict[tuple[str, UUID], int]) -> None:
    if not deltas:
        return
    keys = sorted(deltas)
    await conn.execute(
        text(
            "INSERT INTO inventory.user_holdings (user_id, ticket_type_id, quantity) "
            "SELECT * FROM unnest(CAST(:users AS text[]), CAST(:tts AS uuid[]), CAST(:qs AS int[])) "
            "ON CONFLICT (user_id, ticket_type_id) "
            "DO UPDATE SET quantity = inventory.user_holdings.quantity + EXCLUDED.quantity"
        ),
        {"users": [k[0] for k in keys], "tts": [k[1] for k in keys], "qs": [deltas[k] for k in keys]},
    )


async def apply_stock_deltas(
    conn: AsyncConnection, held: dict[UUID, int], sold: dict[UUID, int] | None = None
) -> list[StockChanged]:
    """Move held/sold counters of already-locked rows; the table's CHECK refuses any oversell."""
    sold = sold or {}
    ids = sorted(set(held) | set(sold))
    if not ids:
        return []
    rows = await conn.execute(
        text(
            "UPDATE inventory.ticket_types t SET held = t.held + d.dh, sold = t.sold + d.ds "
            "FROM unnest(CAST(:ids AS uuid[]), CAST(:dh AS int[]), CAST(:ds AS int[])) AS d(id, dh, ds) "
            "WHERE t.id = d.id RETURNING t.id, t.event_id, t.capacity, t.held, t.sold"
        ),
        {"ids": ids, "dh": [held.get(i, 0) for i in ids], "ds": [sold.get(i, 0) for i in ids]},
    )
    return [
        StockChanged(ticket_type_id=r.id, event_id=r.event_id, capacity=r.capacity, held=r.held, sold=r.sold)
        for r in rows
    ]


async def seconds_until_expiry(conn: AsyncConnection, order_id: UUID) -> float | None:
    """Seconds until a PENDING order's hold expires (negative when overdue); None if it is not PENDING."""
    value = await conn.scalar(
        text("SELECT EXTRACT(EPOCH FROM expires_at - now()) FROM inventory.orders "
             "WHERE id = :id AND status = 'PENDING'"),
        {"id": order_id},
    )
    return None if value is None else float(value)


@dataclass(frozen=True)
class ReleasedOrder:
    view: OrderView
    event_id: UUID | None
    user_email: str
    locale: str


async def release_orders(
    conn: AsyncConnection,
    status: OrderStatus,
    *,
    order_ids: Sequence[UUID] | None = None,
    overdue_limit: int = 0,
) -> tuple[list[ReleasedOrder], list[StockChanged]]:
    """Move PENDING orders to EXPIRED or CANCELLED and return their stock, exactly once.

    Either ``order_ids`` (expiry: only those already past ``expires_at``; cancel: any) or ``overdue_limit``
    (the sweeper: up to that many overdue orders, skipping rows another transaction holds).
    """
    if order_ids is not None:
        expired_only = "AND expires_at <= now()" if status is OrderStatus.EXPIRED else ""
        where = f"id = ANY(:ids) AND status = 'PENDING' {expired_only}"
        params: dict[str, Any] = {"ids": list(order_ids)}
    else:
        where = (
            "id IN (SELECT id FROM inventory.orders WHERE status = 'PENDING' AND expires_at <= now() "
            "ORDER BY expires_at LIMIT :n FOR UPDATE SKIP LOCKED)"
        )
        params = {"n": overdue_limit}
    rows = (
        await conn.execute(
            text(
                f"UPDATE inventory.orders SET status = :status, updated_at = now() WHERE {where} "
                "RETURNING id, user_id, user_email, locale, total, expires_at, event_id, created_at"
            ),
            {**params, "status": status.value},
        )
    ).all()
    if not rows:
        return [], []
    released_ids = [r.id for r in rows]
    item_rows = (
        await conn.execute(
            text(
                "SELECT order_id, ticket_type_id, quantity, unit_price FROM inventory.order_items "
                "WHERE order_id = ANY(:ids)"
            ),
            {"ids": released_ids},
        )
    ).all()
    lines: dict[UUID, list[PricedLine]] = {i: [] for i in released_ids}
    held: dict[UUID, int] = {}
    holdings: dict[tuple[str, UUID], int] = {}
    user_of = {r.id: r.user_id for r in rows}
    for it in item_rows:
        lines[it.order_id].append(
            PricedLine(ticket_type_id=it.ticket_type_id, quantity=it.quantity, unit_price=it.unit_price)
        )
        held[it.ticket_type_id] = held.get(it.ticket_type_id, 0) - it.quantity
        key = (user_of[it.order_id], it.ticket_type_id)
        holdings[key] = holdings.get(key, 0) + it.quantity
    await lock_stock(conn, held)
    changes = await apply_stock_deltas(conn, held)
    await release_holdings(conn, holdings)
    released = [
        ReleasedOrder(
            view=OrderView(
                order_id=r.id, user_id=r.user_id, status=status, total=r.total, items=lines[r.id],
                expires_at=r.expires_at, created_at=r.created_at,
            ),
            event_id=r.event_id,
            user_email=r.user_email,
            locale=r.locale,
        )
        for r in rows
    ]
    return released, changes


async def release_holdings(conn: AsyncConnection, amounts: dict[tuple[str, UUID], int]) -> None:
    if not amounts:
        return
    keys = sorted(amounts)
    await conn.execute(
        text(
            "UPDATE inventory.user_holdings h SET quantity = h.quantity - d.q "
            "FROM unnest(CAST(:users AS text[]), CAST(:tts AS uuid[]), CAST(:qs AS int[])) AS d(u, tt, q) "
            "WHERE h.user_id = d.u AND h.ticket_type_id = d.tt"
        ),
        {"users": [k[0] for k in keys], "tts": [k[1] for k in keys], "qs": [amounts[k] for k in keys]},
    )


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
            "id": cmd.event_id, "title": cmd.title, "venue": cmd.venue, "city": cmd.city,
            "starts_at": cmd.starts_at, "description": cmd.description, "hold_seconds": cmd.hold_seconds,
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
                "id": t.ticket_type_id, "event_id": event_id, "name": t.name, "price": t.price,
                "capacity": t.capacity, "per_user_limit": t.per_user_limit,
            }
            for t in types
        ],
    )
    await conn.execute(
        text("UPDATE inventory.events SET updated_at = now() WHERE id = :id"), {"id": event_id}
    )


async def event_exists(conn: AsyncConnection, event_id: UUID) -> bool:
    row = await conn.execute(text("SELECT 1 FROM inventory.events WHERE id = :id"), {"id": event_id})
    return row.first() is not None


async def load_event_info(conn: AsyncConnection, event_id: UUID) -> EventInfo | None:
    """The event as published in catalog events (read through inventory's own read_api views)."""
    found = await fetch_event(conn, event_id)
    if found is None:
        return None
    ev, types = found
    return EventInfo(
        event_id=ev.id, title=ev.title, venue=ev.venue, city=ev.city, starts_at=ev.starts_at,
        description=ev.description, hold_seconds=ev.hold_seconds,
        ticket_types=[
            TicketTypeInfo(ticket_type_id=t.id, name=t.name, price=t.price, capacity=t.capacity,
                           per_user_limit=t.per_user_limit)
            for t in types
        ],
    )
