"""Reads across the service boundary, through the documented read-only views in schema read_api."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.gateway.schemas import EventOut, EventSummary, TicketTypeOut, TicketTypeSummary
from shared.messages import OrderView
from shared.read_api import ORDER_COLUMNS, event_fields, fetch_event, order_view, ticket_type_fields


async def get_order(engine: AsyncEngine, order_id: UUID) -> tuple[OrderView, str] | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(f"SELECT {ORDER_COLUMNS} FROM read_api.orders WHERE id = :id"),
                {"id": order_id},
            )
        ).first()
    return (order_view(row), row.request_hash) if row else None


async def get_event(engine: AsyncEngine, event_id: UUID) -> EventOut | None:
    async with engine.connect() as conn:
        found = await fetch_event(conn, event_id)
    if found is None:
        return None
    ev, types = found
    return EventOut(
        **event_fields(ev),
        status=ev.status,
        ticket_types=[TicketTypeOut(**ticket_type_fields(t), available=max(t.available, 0)) for t in types],
    )


async def ticket_type_summaries(engine: AsyncEngine, event_ids: list[UUID]) -> dict[UUID, list[TicketTypeSummary]]:
    """The ticket types of a page of events (one indexed query), cheapest first, for the /events listing."""
    if not event_ids:
        return {}
    out: dict[UUID, list[TicketTypeSummary]] = {e: [] for e in event_ids}
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, event_id, name, price, available FROM read_api.ticket_types "
                "WHERE event_id = ANY(:ids) ORDER BY event_id, price, name, id"
            ),
            {"ids": event_ids},
        )
        for r in rows:
            out[r.event_id].append(
                TicketTypeSummary(ticket_type_id=r.id, name=r.name, price=r.price, available=max(int(r.available), 0))
            )
    return out


async def list_upcoming_events(engine: AsyncEngine, limit: int, offset: int) -> list[EventSummary]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT e.id, e.title, e.venue, e.city, e.starts_at, MIN(t.price) AS lowest_price, "
                "COALESCE(SUM(GREATEST(t.available, 0)), 0) AS available "
                "FROM read_api.searchable_events e LEFT JOIN read_api.ticket_types t ON t.event_id = e.id "
                "WHERE e.starts_at > now() GROUP BY e.id, e.title, e.venue, e.city, e.starts_at "
                "ORDER BY e.starts_at, e.id LIMIT :limit OFFSET :offset"
            ),
            {"limit": limit, "offset": offset},
        )
        return [
            EventSummary(
                event_id=r.id,
                title=r.title,
                venue=r.venue,
                city=r.city,
                starts_at=r.starts_at,
                lowest_price=r.lowest_price,
                available=int(r.available),
            )
            for r in rows
        ]
