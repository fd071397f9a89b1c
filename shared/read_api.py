"""The read-only views (schema ``read_api``) that other services may read; inventory owns the tables."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.messages import OrderStatus, OrderView, PricedLine

ORDER_COLUMNS = "id, user_id, status, total, items, expires_at, reason, detail, created_at, request_hash"


def order_view(row: Any) -> OrderView:
    return OrderView(
        order_id=row.id,
        user_id=row.user_id,
        status=OrderStatus(row.status),
        total=row.total,
        items=[PricedLine(**i) for i in row.items],
        expires_at=row.expires_at,
        reason=row.reason,
        detail=row.detail,
        created_at=row.created_at,
    )


def event_fields(row: Any) -> dict[str, Any]:
    """What an event's row (``fetch_event``) gives every shape of the event: the API's and the catalog message's."""
    return {
        "event_id": row.id,
        "title": row.title,
        "venue": row.venue,
        "city": row.city,
        "starts_at": row.starts_at,
        "description": row.description,
        "hold_seconds": row.hold_seconds,
    }


def ticket_type_fields(row: Any) -> dict[str, Any]:
    """What a ticket type's row (``fetch_event``) gives every shape of it."""
    return {
        "ticket_type_id": row.id,
        "name": row.name,
        "price": row.price,
        "capacity": row.capacity,
        "per_user_limit": row.per_user_limit,
    }


async def fetch_event(conn: AsyncConnection, event_id: UUID) -> tuple[Any, list[Any]] | None:
    """An event's row and its ticket types' rows (cheapest first, with ``available``), from the views."""
    event = (
        await conn.execute(
            text(
                "SELECT id, title, venue, city, starts_at, description, hold_seconds, updated_at, status "
                "FROM read_api.events WHERE id = :id"
            ),
            {"id": event_id},
        )
    ).first()
    if event is None:
        return None
    types = await conn.execute(
        text(
            "SELECT id, name, price, capacity, per_user_limit, available FROM read_api.ticket_types "
            "WHERE event_id = :id ORDER BY price, name"
        ),
        {"id": event_id},
    )
    return event, list(types)


async def expiring_holds(conn: AsyncConnection, within_seconds: float, limit: int = 100) -> list[dict[str, Any]]:
    """Holds (PENDING orders) whose time runs out within ``within_seconds`` (overdue ones included: the
    sweeper's work), soonest first."""
    rows = (
        (
            await conn.execute(
                text(
                    "SELECT id, user_id, total, expires_at, extract(epoch FROM expires_at - now()) AS seconds_left "
                    "FROM read_api.orders WHERE status = 'PENDING' "
                    "AND expires_at < now() + make_interval(secs => :within) ORDER BY expires_at LIMIT :n"
                ),
                {"within": within_seconds, "n": limit},
            )
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]
