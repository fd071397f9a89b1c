"""Where a payment turns a hold into a sale: PENDING -> PAID, or, for a late payment, re-hold and PAID or a
refund (the rules are the ``Order`` aggregate's: ``pay`` and ``pay_late``).

Race with expiry and cancel: each side locks the order row first and saves its move with an UPDATE guarded
by the status it loaded; the row lock orders them, so the loser sees the winner's status when it loads the
order. A payment that loses to an expiry takes the late path.

Late payment (the order is EXPIRED or CANCELLED): if the stock and the buyer's per-user limit still allow it,
the stock is taken again (sold += q, user holdings re-added) and the order is PAID; otherwise the order becomes
REFUND_PENDING and the payment service asks the provider for the refund (REFUNDED when it confirms). Either
way a paid order is resolved; see docs/decisions.md, "Late payments".

Lock order is always the order row, then its ticket types in id order (as the release path does), so payment,
expiry and cancel never deadlock one another.
"""

from __future__ import annotations

from prometheus_client import Counter

from services.inventory.domain import IllegalTransition, Order
from services.inventory.uow import AbstractInventoryUnitOfWork
from shared import logs
from shared.messages import OrderPaid, OrderStatus, PaymentRefunded, PaymentSucceeded, RefundCause
from shared.messaging import PermanentError

log = logs.get_logger(__name__)

SALES = Counter("ticketing_payments_applied_total", "Payments applied to orders, by path", ["path"])
LATE_REFUND_REASON = "paid after the hold expired and the tickets were sold"


async def payment_succeeded(msg: PaymentSucceeded, uow: AbstractInventoryUnitOfWork) -> None:
    async with uow:
        path = await _settle(uow, msg)
        if path is not None:
            await uow.commit()
    if path is not None:
        SALES.labels(path=path).inc()
        log.info("payment_applied", order_id=str(msg.order_id), outcome=path)


async def _settle(uow: AbstractInventoryUnitOfWork, msg: PaymentSucceeded) -> str | None:
    """Apply a payment to its order; the path taken, or None for a redelivery of one already applied."""
    order = await uow.orders.lock(msg.order_id)
    if order is None:
        raise PermanentError(f"payment {msg.txn_ref} for unknown order {msg.order_id}")
    settled_by = await uow.sales.settled_by(order.id)
    if settled_by is not None:
        if settled_by == msg.txn_ref:
            return None  # a redelivery: already applied
        # A second successful attempt for a settled order: money taken twice. Operators refund it from the
        # dead-letter queue (the reason says so); it is never silently dropped.
        raise PermanentError(f"second payment {msg.txn_ref} for order {order.id} settled by {settled_by}")
    if order.total != msg.amount:  # the payment service checked it; a mismatch here is a bug, not a retry
        raise PermanentError(f"payment {msg.txn_ref} of {msg.amount} VND for an order of {order.total} VND")
    late = order.status is not OrderStatus.PENDING
    try:
        if not late:
            effect = order.pay()
        else:
            stock = await uow.stock.lock(line.ticket_type_id for line in order.lines)
            holdings = await uow.stock.holdings((order.user_id, line.ticket_type_id) for line in order.lines)
            effect = order.pay_late(stock, holdings, msg.amount, LATE_REFUND_REASON)
    except IllegalTransition as exc:
        raise PermanentError(f"payment {msg.txn_ref}: {exc}") from exc
    await uow.orders.save([order])
    uow.emit(await uow.stock.apply(effect, locked=late))  # a late payment locked the stock to check it
    uow.emit(order.events)
    await uow.sales.record(msg, order, late)
    if order.refund_cause is RefundCause.EVENT_CANCELLED:  # paid late for an event cancelled meanwhile
        await uow.sales.refund_requested([order.id], order.refund_cause)
    if order.status is OrderStatus.PAID:
        uow.emit([await _order_paid(uow, order, msg)])
        return "late_paid" if late else "paid"
    return "refund_pending"


async def _order_paid(uow: AbstractInventoryUnitOfWork, order: Order, msg: PaymentSucceeded) -> OrderPaid:
    tickets = await uow.sales.issue_tickets(order)
    assert order.event_id is not None
    ev = await uow.sales.event_facts(order.event_id)
    return OrderPaid(
        order_id=order.id,
        user_id=order.user_id,
        user_email=order.user_email,
        locale=order.locale,
        event_id=order.event_id,
        event_title=ev.title,
        venue=ev.venue,
        city=ev.city,
        starts_at=ev.starts_at,
        items=list(order.lines),
        total=order.total,
        paid_at=msg.paid_at,
        tickets=tickets,
    )


async def payment_refunded(msg: PaymentRefunded, uow: AbstractInventoryUnitOfWork) -> None:
    async with uow:
        order = await uow.orders.lock(msg.order_id)
        if order is None or order.status is not OrderStatus.REFUND_PENDING:
            return  # a redelivery (already REFUNDED), or nothing to refund
        cause = await uow.sales.refund_cause(order.id)
        order.refunded(msg.amount, msg.detail or "refunded by the payment provider", cause)
        await uow.orders.save([order])
        await uow.sales.mark(order.id, OrderStatus.REFUNDED)
        uow.emit(order.events)
        await uow.commit()
    log.info("order_refunded", order_id=str(msg.order_id))
