"""Reads for the buyer's and the door's routes, through the read_api views (orders, tickets, ticket types):
a buyer's orders page by page, an order's tickets, an event's check-ins."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.messages import OrderView
from shared.read_api import ORDER_COLUMNS, order_view


async def orders_of(
    engine: AsyncEngine, user_id: str, limit: int, after: tuple[datetime, UUID] | None
) -> list[OrderView]:
    """The buyer's orders newest first by (created_at, id), those strictly after the ``after`` key: a keyset,
    so an order placed while the buyer pages never shifts or repeats what the next page shows."""
    where, params = "user_id = :user", {"user": user_id, "n": limit}
    if after is not None:
        where += " AND (created_at, id) < (CAST(:created AS timestamptz), CAST(:id AS uuid))"
        params.update(created=after[0], id=after[1])
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                f"SELECT {ORDER_COLUMNS} FROM read_api.orders WHERE {where} ORDER BY created_at DESC, id DESC LIMIT :n"
            ),
            params,
        )
        return [order_view(r) for r in rows]


async def tickets_of(engine: AsyncEngine, order_id: UUID) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT ticket_id, ticket_type_id, code FROM read_api.tickets WHERE order_id = :id "
                "ORDER BY ticket_type_id, seq"
            ),
            {"id": order_id},
        )
        return list(rows)


async def checkins(engine: AsyncEngine, event_id: UUID, latest: int) -> tuple[list[Any], list[Any]] | None:
    """Per ticket type of the event: tickets issued and admitted; and the latest admissions, newest first.
    None when there is no such event."""
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT 1 FROM read_api.events WHERE id = :id"), {"id": event_id})
        if found.first() is None:
            return None
        per_type = await conn.execute(
            text(
                "SELECT tt.id AS ticket_type_id, tt.name, COUNT(t.ticket_id) AS issued, "
                "COUNT(t.admitted_at) AS admitted FROM read_api.ticket_types tt "
                "LEFT JOIN read_api.tickets t ON t.ticket_type_id = tt.id WHERE tt.event_id = :id "
                "GROUP BY tt.id, tt.name, tt.price ORDER BY tt.price, tt.name"
            ),
            {"id": event_id},
        )
        recent = await conn.execute(
            text(
                "SELECT ticket_id, ticket_type_id, admitted_at FROM read_api.tickets "
                "WHERE event_id = :id AND admitted_at IS NOT NULL ORDER BY admitted_at DESC, ticket_id LIMIT :n"
            ),
            {"id": event_id, "n": latest},
        )
        return list(per_type), list(recent)
