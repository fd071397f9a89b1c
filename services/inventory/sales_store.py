"""SQL for what a sale leaves behind: the payment an order was settled with, and its tickets. The repository
runs inside the unit of work's transaction."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import text

from services.inventory.domain import Order
from shared.messages import IssuedTicket, OrderStatus, PaymentSucceeded, RefundCause
from shared.repository import Repository


class Sales(Repository):
    async def settled_by(self, order_id: UUID) -> str | None:
        """The provider reference the order was settled with, if any."""
        return await self.scalar("SELECT txn_ref FROM inventory.order_payments WHERE order_id = :id", {"id": order_id})

    async def record(self, payment: PaymentSucceeded, order: Order, late: bool) -> None:
        """The order's one settlement (its primary key) by this payment: paid, or sent to refund (its status)."""
        await self.execute(
            "INSERT INTO inventory.order_payments (order_id, provider, txn_ref, amount, late, outcome, paid_at) "
            "VALUES (:id, :provider, :txn_ref, :amount, :late, :outcome, :paid_at)",
            {
                "id": order.id,
                "provider": payment.provider,
                "txn_ref": payment.txn_ref,
                "amount": payment.amount,
                "late": late,
                "outcome": order.status.value,
                "paid_at": payment.paid_at,
            },
        )

    async def mark(self, order_id: UUID, outcome: OrderStatus) -> None:
        await self.execute(
            "UPDATE inventory.order_payments SET outcome = :o, "
            "refunded_at = CASE WHEN :o = 'REFUNDED' THEN now() ELSE refunded_at END WHERE order_id = :id",
            {"id": order_id, "o": outcome.value},
        )

    async def refund_requested(self, order_ids: Sequence[UUID], cause: RefundCause, actor: str | None = None) -> None:
        """Paid orders sent to refund by the organiser: their settlement says so, and their tickets are void."""
        if not order_ids:
            return
        await self.execute(
            "UPDATE inventory.order_payments SET outcome = 'REFUND_PENDING', refund_requested_at = now(), "
            "refund_cause = :cause, refund_requested_by = :actor WHERE order_id = ANY(:ids)",
            {"ids": list(order_ids), "cause": cause.value, "actor": actor},
        )
        await self.execute(
            "UPDATE inventory.tickets SET voided_at = now() WHERE order_id = ANY(:ids) AND voided_at IS NULL",
            {"ids": list(order_ids)},
        )

    async def refund_cause(self, order_id: UUID) -> RefundCause:
        """Why the order is being refunded: the organiser's cause, else a late payment's refund."""
        cause = await self.scalar(
            "SELECT refund_cause FROM inventory.order_payments WHERE order_id = :id", {"id": order_id}
        )
        return RefundCause(cause) if cause else RefundCause.LATE_PAYMENT

    async def issue_tickets(self, order: Order) -> list[IssuedTicket]:
        """One ticket per admission; the code is 128 random bits (unguessable), unique per (order, type, seq)."""
        result = await self.all(
            "SELECT id, name FROM inventory.ticket_types WHERE id = ANY(:ids)",
            {"ids": [line.ticket_type_id for line in order.lines]},
        )
        names: dict[UUID, str] = {r.id: r.name for r in result}
        rows: list[dict[str, Any]] = [
            {"code": secrets.token_urlsafe(16), "order_id": order.id, "tt": line.ticket_type_id, "seq": seq}
            for line in order.lines
            for seq in range(1, line.quantity + 1)
        ]
        await self.conn.execute(  # one statement for many rows (executemany): not a Repository helper's shape
            text(
                "INSERT INTO inventory.tickets (code, order_id, ticket_type_id, seq) "
                "VALUES (:code, :order_id, :tt, :seq)"
            ),
            rows,
        )
        return [IssuedTicket(code=r["code"], ticket_type_id=r["tt"], ticket_type_name=names[r["tt"]]) for r in rows]

    async def event_facts(self, event_id: UUID) -> Any:
        """What the ticket email says of the event."""
        return await self.one(
            "SELECT title, venue, city, starts_at FROM inventory.events WHERE id = :id", {"id": event_id}
        )
