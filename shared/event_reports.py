"""An organiser's reports of one event, read through the read_api views (inventory owns the tables): the
cancellation's progress, the sales per ticket type, and the accounting export's rows. Used by the gateway's
admin API and by `ticketing events show`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.cancellation import progress_of
from shared.messages import EventStatus


async def event_admin(conn: AsyncConnection, event_id: UUID) -> dict[str, Any] | None:
    """The event, its status and its cancellation's progress (None: no such event)."""
    row = (await conn.execute(text("SELECT * FROM read_api.event_admin WHERE id = :id"), {"id": event_id})).first()
    if row is None:
        return None
    r = row._mapping
    progress = progress_of(
        r["id"],
        EventStatus(r["status"]),
        orders_cancelled=r["orders_cancelled"],
        orders_sent_to_refund=r["orders_sent_to_refund"],
        batches=r["cancel_batches"],
        pending=r["pending_orders"],
        paid=r["paid_orders"],
        refund_pending=r["refund_pending_orders"],
    )
    return {
        "event_id": r["id"],
        "title": r["title"],
        "venue": r["venue"],
        "city": r["city"],
        "starts_at": r["starts_at"],
        "status": r["status"],
        "cancel_requested_at": r["cancel_requested_at"],
        "cancelled_at": r["cancelled_at"],
        "cancelled_by": r["cancelled_by"],
        "progress": progress.model_dump(mode="json", exclude={"event_id", "status"}),
        "orders": {
            "pending": r["pending_orders"],
            "paid": r["paid_orders"],
            "refund_pending": r["refund_pending_orders"],
            "refunded": r["refunded_orders"],
        },
    }


SALES_FIELDS = ("capacity", "held", "sold", "available", "refunded", "admitted", "revenue")


async def sales(conn: AsyncConnection, event_id: UUID) -> list[dict[str, Any]]:
    """Per ticket type: capacity, held, sold, available, refunded, admitted, revenue (integer VND)."""
    rows = await conn.execute(
        text(
            "SELECT ticket_type_id, name, price, capacity, held, sold, available, refunded, admitted, revenue "
            "FROM read_api.ticket_type_sales WHERE event_id = :id ORDER BY price, name"
        ),
        {"id": event_id},
    )
    return [{**r._mapping, **{f: int(r._mapping[f]) for f in SALES_FIELDS}} for r in rows]


def totals(lines: list[dict[str, Any]]) -> dict[str, int]:
    return {f: sum(line[f] for line in lines) for f in SALES_FIELDS}


LEDGER_COLUMNS = (
    "order_id",
    "created_at",
    "status",
    "user_id",
    "user_email",
    "ticket_type_id",
    "ticket_type_name",
    "quantity",
    "unit_price",
    "line_total",
    "order_total",
    "paid_at",
    "refund_requested_at",
    "refunded_at",
    "provider",
    "txn_ref",
)


async def ledger(conn: AsyncConnection, event_id: UUID) -> AsyncIterator[tuple[Any, ...]]:
    """The event's order lines, oldest first, streamed from a server-side cursor (an event may have many)."""
    result = await conn.stream(
        text(
            f"SELECT {', '.join(LEDGER_COLUMNS)} FROM read_api.order_ledger WHERE event_id = :id "
            "ORDER BY created_at, order_id, ticket_type_id"
        ),
        {"id": event_id},
    )
    async for row in result:
        yield tuple(row)
