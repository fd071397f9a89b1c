"""What a resent email says, read back from the read_api views (inventory owns the data): the order as it is
now, rebuilt into the message its current status was announced with (``OrderPaid`` with the very tickets
issued, ``OrderExpired``, ``OrderRefunded``), so a resend renders exactly as the first email did."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.messages import IssuedTicket, OrderExpired, OrderPaid, OrderRefunded, OrderStatus, PricedLine

# Why the money went back is not kept with the order; a resent refund notice says this instead.
RESENT_REFUND_REASON = "a copy of the refund notice of this order"

OrderEmailMessage = OrderPaid | OrderExpired | OrderRefunded


async def current_message(engine: AsyncEngine, order_id: UUID) -> OrderEmailMessage | None:
    """The message the order's current status was announced with; None when the order is unknown or its status
    has no email (it moved on since the resend was asked for, e.g. PAID -> REFUND_PENDING)."""
    async with engine.connect() as conn:
        order = (
            await conn.execute(
                text(
                    "SELECT c.order_id, c.user_id, c.user_email, c.locale, c.status, c.event_id, c.total, "
                    "c.paid_amount, c.paid_at, o.items FROM read_api.order_contacts c "
                    "JOIN read_api.orders o ON o.id = c.order_id WHERE c.order_id = :id"
                ),
                {"id": order_id},
            )
        ).first()
        if order is None:
            return None
        status = OrderStatus(order.status)
        buyer = {
            "order_id": order.order_id,
            "user_id": order.user_id,
            "user_email": order.user_email,
            "locale": order.locale,
            "event_id": order.event_id,
        }
        items = [PricedLine(**i) for i in order.items]
        if status is OrderStatus.EXPIRED:
            return OrderExpired(**buyer, status=status, items=items)
        if status is OrderStatus.REFUNDED:
            return OrderRefunded(**buyer, amount=order.paid_amount or order.total, reason=RESENT_REFUND_REASON)
        if status is not OrderStatus.PAID or order.event_id is None or order.paid_at is None:
            return None
        event = (
            await conn.execute(
                text("SELECT title, venue, city, starts_at FROM read_api.events WHERE id = :id"),
                {"id": order.event_id},
            )
        ).one()
        tickets = await conn.execute(
            text(
                "SELECT code, ticket_type_id, ticket_type_name FROM read_api.tickets WHERE order_id = :id "
                "ORDER BY ticket_type_id, seq"
            ),
            {"id": order_id},
        )
        return OrderPaid(
            **buyer,
            event_title=event.title,
            venue=event.venue,
            city=event.city,
            starts_at=event.starts_at,
            items=items,
            total=order.total,
            paid_at=order.paid_at,
            tickets=[
                IssuedTicket(code=t.code, ticket_type_id=t.ticket_type_id, ticket_type_name=t.ticket_type_name)
                for t in tickets
            ],
        )
