"""A payment turns a hold into a sale: PENDING -> PAID, or, for a late payment, re-hold and PAID or a refund.

Race with expiry and cancel: both sides are one conditional UPDATE guarded by the order's status. The order
row's lock orders them; the loser's UPDATE matches nothing (PostgreSQL re-checks the guard against the
winner's committed row) and it sees that it lost. A payment that loses to an expiry takes the late path.

Late payment (the order is EXPIRED or CANCELLED): if the stock and the buyer's per-user limit still allow it,
the stock is taken again (sold += q, user holdings re-added) and the order is PAID; otherwise the order becomes
REFUND_PENDING and the payment service asks the provider for the refund (REFUNDED when it confirms). Either
way a paid order is resolved; see docs/decisions.md, "Late payments".

Lock order is always the order row, then its ticket types in id order (as the release path does), so payment,
expiry and cancel never deadlock one another.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.inventory import sales_store as ss
from services.inventory import store
from services.inventory.domain import StockLevel, can_transition
from shared import logs, outbox, topology
from shared.messages import (
    OrderPaid,
    OrderRefunded,
    OrderStatus,
    PaymentRefunded,
    PaymentSucceeded,
    PricedLine,
    StockChanged,
)
from shared.messaging import Delivery, PermanentError
from shared.outbox import OutboxRelay, Outgoing

log = logs.get_logger(__name__)

LATE_FROM = (OrderStatus.EXPIRED, OrderStatus.CANCELLED)
SALES = Counter("ticketing_payments_applied_total", "Payments applied to orders, by path", ["path"])


def stock_still_free(
    lines: Sequence[PricedLine], stock: dict[uuid.UUID, StockLevel], holdings: dict[tuple[str, uuid.UUID], int],
    user_id: str,
) -> bool:
    """Can a late payment take its tickets again? Free stock for every line and within the per-user limit."""
    for line in lines:
        level = stock.get(line.ticket_type_id)
        if level is None or level.available < line.quantity:
            return False
        if holdings.get((user_id, line.ticket_type_id), 0) + line.quantity > level.per_user_limit:
            return False
    return True


@dataclass
class Sales:
    engine: AsyncEngine
    relay: OutboxRelay

    async def on_payment_succeeded(self, msg: PaymentSucceeded, delivery: Delivery) -> None:
        async with self.engine.begin() as conn:
            outcome = await self._settle(conn, msg)
        if outcome is not None:
            self.relay.wake()
            SALES.labels(path=outcome).inc()
            log.info("payment_applied", order_id=str(msg.order_id), outcome=outcome)

    async def _settle(self, conn: AsyncConnection, msg: PaymentSucceeded) -> str | None:
        # On time: the one conditional UPDATE PENDING -> PAID.
        order = await ss.transition(conn, msg.order_id, OrderStatus.PENDING, OrderStatus.PAID)
        if order is not None:
            self._check_amount(order, msg)
            lines = await ss.order_lines(conn, order.id)
            await store.lock_stock(conn, [line.ticket_type_id for line in lines])
            changes = await store.apply_stock_deltas(
                conn, {line.ticket_type_id: -line.quantity for line in lines},
                {line.ticket_type_id: line.quantity for line in lines},
            )
            await self._paid(conn, order, lines, msg, changes, late=False)
            return "paid"
        order = await ss.lock_order(conn, msg.order_id)
        if order is None:
            raise PermanentError(f"payment {msg.txn_ref} for unknown order {msg.order_id}")
        settled = await ss.settlement(conn, order.id)
        if settled is not None:
            if settled.txn_ref == msg.txn_ref:
                return None  # a redelivery: already applied
            # A second successful attempt for a settled order: money taken twice. Operators refund it from the
            # dead-letter queue (the reason says so); it is never silently dropped.
            raise PermanentError(f"second payment {msg.txn_ref} for order {order.id} settled by {settled.txn_ref}")
        if order.status not in LATE_FROM:
            raise PermanentError(f"payment {msg.txn_ref} for order {order.id} in status {order.status.value}")
        self._check_amount(order, msg)
        lines = await ss.order_lines(conn, order.id)
        stock = await store.lock_stock(conn, [line.ticket_type_id for line in lines])
        holdings = await store.load_holdings(conn, [(order.user_id, line.ticket_type_id) for line in lines])
        if stock_still_free(lines, stock, holdings, order.user_id):
            assert can_transition(order.status, OrderStatus.PAID)
            if await ss.transition(conn, order.id, order.status, OrderStatus.PAID) is None:
                raise RuntimeError("order changed under its row lock")  # cannot happen; retried if it does
            changes = await store.apply_stock_deltas(conn, {}, {line.ticket_type_id: line.quantity for line in lines})
            await store.add_holdings(conn, {(order.user_id, line.ticket_type_id): line.quantity for line in lines})
            await self._paid(conn, order, lines, msg, changes, late=True)
            return "late_paid"
        assert can_transition(order.status, OrderStatus.REFUND_PENDING)
        if await ss.transition(conn, order.id, order.status, OrderStatus.REFUND_PENDING) is None:
            raise RuntimeError("order changed under its row lock")
        await ss.record_settlement(conn, order.id, msg.provider, msg.txn_ref, msg.amount, True,
                                   OrderStatus.REFUND_PENDING, msg.paid_at)
        await outbox.add(conn, "inventory", [Outgoing.event(
            topology.ORDER_REFUND_PENDING,
            OrderRefunded(order_id=order.id, user_id=order.user_id, user_email=order.user_email,
                          locale=order.locale, event_id=order.event_id, amount=msg.amount,
                          reason="paid after the hold expired and the tickets were sold"),
            f"refund-pending:{order.id}",
        )])
        return "refund_pending"

    @staticmethod
    def _check_amount(order: ss.OrderRow, msg: PaymentSucceeded) -> None:
        if order.total != msg.amount:  # the payment service checked it; a mismatch here is a bug, not a retry
            raise PermanentError(f"payment {msg.txn_ref} of {msg.amount} VND for an order of {order.total} VND")

    async def _paid(
        self, conn: AsyncConnection, order: ss.OrderRow, lines: list[PricedLine], msg: PaymentSucceeded,
        changes: list[StockChanged], late: bool,
    ) -> None:
        await ss.record_settlement(conn, order.id, msg.provider, msg.txn_ref, msg.amount, late, OrderStatus.PAID,
                                   msg.paid_at)
        tickets = await ss.issue_tickets(conn, order.id, lines)
        assert order.event_id is not None
        ev = await ss.event_info(conn, order.event_id)
        paid = OrderPaid(
            order_id=order.id, user_id=order.user_id, user_email=order.user_email, locale=order.locale,
            event_id=order.event_id, event_title=ev.title, venue=ev.venue, city=ev.city, starts_at=ev.starts_at,
            items=lines, total=order.total, paid_at=msg.paid_at, tickets=tickets,
        )
        messages = [Outgoing.event(topology.ORDER_PAID, paid, f"paid:{order.id}")]
        messages += [
            Outgoing.event(topology.STOCK_CHANGED, c, f"stock:{c.ticket_type_id}:{uuid.uuid4().hex}") for c in changes
        ]
        await outbox.add(conn, "inventory", messages)

    async def on_payment_refunded(self, msg: PaymentRefunded, delivery: Delivery) -> None:
        async with self.engine.begin() as conn:
            order = await ss.transition(conn, msg.order_id, OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED)
            if order is None:
                return  # a redelivery (already REFUNDED), or nothing to refund
            await ss.mark_settlement(conn, order.id, OrderStatus.REFUNDED)
            await outbox.add(conn, "inventory", [Outgoing.event(
                topology.ORDER_REFUNDED,
                OrderRefunded(order_id=order.id, user_id=order.user_id, user_email=order.user_email,
                              locale=order.locale, event_id=order.event_id, amount=msg.amount,
                              reason=msg.detail or "refunded by the payment provider"),
                f"refunded:{order.id}",
            )])
        self.relay.wake()
        log.info("order_refunded", order_id=str(msg.order_id), at=datetime.now(UTC).isoformat())
