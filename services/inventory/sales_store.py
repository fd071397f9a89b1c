"""SQL for what a sale leaves behind: the payment an order was settled with, and its tickets. The repository
runs inside the unit of work's transaction."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.domain import Order
from shared.messages import IssuedTicket, OrderStatus


class Sales:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def settled_by(self, order_id: UUID) -> str | None:
        """The provider reference the order was settled with, if any."""
        row = await self.conn.execute(
            text("SELECT txn_ref FROM inventory.order_payments WHERE order_id = :id"), {"id": order_id}
        )
        return row.scalar_one_or_none()  # type: ignore[no-any-return]

    async def record(
        self,
        order_id: UUID,
        provider: str,
        txn_ref: str,
        amount: int,
        late: bool,
        outcome: OrderStatus,
        paid_at: datetime,
    ) -> None:
        """One settlement per order (its primary key): paid, or sent to refund."""
        await self.conn.execute(
            text(
                "INSERT INTO inventory.order_payments (order_id, provider, txn_ref, amount, late, outcome, paid_at) "
                "VALUES (:id, :provider, :txn_ref, :amount, :late, :outcome, :paid_at)"
            ),
            {
                "id": order_id,
                "provider": provider,
                "txn_ref": txn_ref,
                "amount": amount,
                "late": late,
                "outcome": outcome.value,
                "paid_at": paid_at,
            },
        )

    async def mark(self, order_id: UUID, outcome: OrderStatus) -> None:
        await self.conn.execute(
            text("UPDATE inventory.order_payments SET outcome = :o WHERE order_id = :id"),
            {"id": order_id, "o": outcome.value},
        )

    async def issue_tickets(self, order: Order) -> list[IssuedTicket]:
        """One ticket per admission; the code is 128 random bits (unguessable), unique per (order, type, seq)."""
        result = await self.conn.execute(
            text("SELECT id, name FROM inventory.ticket_types WHERE id = ANY(:ids)"),
            {"ids": [line.ticket_type_id for line in order.lines]},
        )
        names: dict[UUID, str] = {r.id: r.name for r in result}
        rows: list[dict[str, Any]] = [
            {"code": secrets.token_urlsafe(16), "order_id": order.id, "tt": line.ticket_type_id, "seq": seq}
            for line in order.lines
            for seq in range(1, line.quantity + 1)
        ]
        await self.conn.execute(
            text(
                "INSERT INTO inventory.tickets (code, order_id, ticket_type_id, seq) "
                "VALUES (:code, :order_id, :tt, :seq)"
            ),
            rows,
        )
        return [IssuedTicket(code=r["code"], ticket_type_id=r["tt"], ticket_type_name=names[r["tt"]]) for r in rows]

    async def event_facts(self, event_id: UUID) -> Any:
        """What the ticket email says of the event."""
        return (
            await self.conn.execute(
                text("SELECT title, venue, city, starts_at FROM inventory.events WHERE id = :id"), {"id": event_id}
            )
        ).one()
