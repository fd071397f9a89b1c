"""The organiser's inventory handlers against the fake unit of work: a refund, and an event's cancellation in
batches (each its own unit of work, continued by a message it commits), resumed after a crash."""

from __future__ import annotations

import uuid

from services.inventory import organiser, sales
from services.inventory.domain import Event, Order
from shared.messages import (
    CancelEvent,
    ContinueEventCancellation,
    EventCancelled,
    EventCancelOutcome,
    EventStatus,
    OrderCancelled,
    OrderRefunded,
    OrderRefundPending,
    OrderStatus,
    PaymentRefunded,
    RefundCause,
    RefundOrder,
    RefundOutcome,
)
from tests.unit.fakes import NOW, FakeInventoryUnitOfWork
from tests.unit.test_inventory_handlers import EVENT, order_in, paid, stock_of


def continues(uow: FakeInventoryUnitOfWork) -> list[ContinueEventCancellation]:
    return [m for m in uow.published if isinstance(m, ContinueEventCancellation)]


async def test_refunding_a_paid_order_returns_its_stock_voids_its_tickets_and_asks_for_the_money() -> None:
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow)
    order = order_in(uow, level, OrderStatus.PENDING, quantity=2)
    await sales.payment_succeeded(paid(order), uow)
    codes = {t.code for t in uow.sales.tickets[order.id]}

    answer = await organiser.refund_order(RefundOrder(order_id=order.id, actor="user:org"), uow)
    assert (
        answer.outcome is RefundOutcome.ACCEPTED and answer.order and answer.order.status is OrderStatus.REFUND_PENDING
    )
    assert (level.held, level.sold, uow.stock.held_by[("lan", level.ticket_type_id)]) == (0, 0, 0)
    assert uow.sales.voided == codes
    pending = uow.published[-1]
    assert isinstance(pending, OrderRefundPending) and pending.cause is RefundCause.ORGANISER

    again = await organiser.refund_order(RefundOrder(order_id=order.id, actor="user:org"), uow)
    assert again.outcome is RefundOutcome.ALREADY and level.sold == 0

    await sales.payment_refunded(
        PaymentRefunded(order_id=order.id, provider="vnpay", txn_ref="ref-1", amount=order.total, refunded_at=NOW),
        uow,
    )
    refunded = uow.published[-1]
    assert isinstance(refunded, OrderRefunded) and refunded.cause is RefundCause.ORGANISER
    assert (await organiser.refund_order(RefundOrder(order_id=order.id, actor="x"), uow)).outcome is (
        RefundOutcome.ALREADY
    )


async def test_only_a_paid_order_is_refunded_and_an_unknown_one_is_not_found() -> None:
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow)
    held = order_in(uow, level, OrderStatus.PENDING)
    answer = await organiser.refund_order(RefundOrder(order_id=held.id, actor="user:org"), uow)
    assert answer.outcome is RefundOutcome.NOT_PAID and level.held == 2 and uow.published == []
    missing = await organiser.refund_order(RefundOrder(order_id=uuid.uuid4(), actor="user:org"), uow)
    assert missing.outcome is RefundOutcome.NOT_FOUND


def event_with_orders(uow: FakeInventoryUnitOfWork, holds: int, sales_: int) -> tuple[list[Order], list[Order]]:
    level = stock_of(uow, capacity=holds + sales_)
    uow.events.put(Event(id=EVENT, status=EventStatus.ON_SALE))
    held = [order_in(uow, level, OrderStatus.PENDING, quantity=1, user=f"h{i}") for i in range(holds)]
    sold = [order_in(uow, level, OrderStatus.PAID, quantity=1, user=f"s{i}") for i in range(sales_)]
    for o in sold:
        uow.sales.settlements[o.id] = {"txn_ref": f"ref-{o.id}", "late": False, "outcome": OrderStatus.PAID}
    return held, sold


async def run_chain(uow: FakeInventoryUnitOfWork, batch_size: int) -> int:
    """Deliver every continue message published so far, in order, until none is new; how many were delivered."""
    delivered = 0
    while len(continues(uow)) > delivered:
        msg = continues(uow)[delivered]
        await organiser.continue_event_cancellation(msg, uow, batch_size=batch_size)
        delivered += 1
    return delivered


async def test_an_event_is_cancelled_in_batches_each_its_own_unit_of_work() -> None:
    uow = FakeInventoryUnitOfWork()
    held, sold = event_with_orders(uow, holds=5, sales_=3)

    answer = await organiser.cancel_event(CancelEvent(event_id=EVENT, actor="user:org"), uow)
    assert answer.outcome is EventCancelOutcome.ACCEPTED and answer.progress is not None
    assert (answer.progress.pending_to_cancel, answer.progress.paid_to_refund) == (5, 3)
    stopped, first_batch = uow.published  # the event's cancellation, then the message that starts the batches
    assert isinstance(stopped, EventCancelled) and isinstance(first_batch, ContinueEventCancellation)
    assert uow.events.rows[EVENT].status is EventStatus.CANCELLING

    commits_before = uow.commits
    assert await run_chain(uow, batch_size=3) == 3  # 8 orders: 3 + 3 + 2, the last batch finishes
    assert uow.commits - commits_before == 3
    assert uow.events.rows[EVENT].status is EventStatus.CANCELLED
    assert all(uow.orders.rows[o.id].status is OrderStatus.CANCELLED for o in held)
    assert all(uow.orders.rows[o.id].status is OrderStatus.REFUND_PENDING for o in sold)
    level = next(iter(uow.stock.levels.values()))
    assert (level.held, level.sold) == (0, 0)
    cancelled = [m for m in uow.published if isinstance(m, OrderCancelled)]
    refunds = [m for m in uow.published if isinstance(m, OrderRefundPending)]
    assert len(cancelled) == 5 and len(refunds) == 3
    assert all(r.cause is RefundCause.EVENT_CANCELLED for r in refunds)

    again = await organiser.cancel_event(CancelEvent(event_id=EVENT, actor="user:org"), uow)
    assert again.outcome is EventCancelOutcome.ALREADY
    missing = await organiser.cancel_event(CancelEvent(event_id=uuid.uuid4(), actor="user:org"), uow)
    assert missing.outcome is EventCancelOutcome.NOT_FOUND


async def test_a_stale_or_repeated_batch_changes_nothing_and_a_resume_goes_on_once() -> None:
    uow = FakeInventoryUnitOfWork()
    event_with_orders(uow, holds=4, sales_=0)
    await organiser.cancel_event(CancelEvent(event_id=EVENT, actor="user:org"), uow)
    first = continues(uow)[0]
    await organiser.continue_event_cancellation(first, uow, batch_size=2)
    # The process died after that commit: the broker redelivers batch 1, and start-up resumes with batch 2.
    commits = uow.commits
    await organiser.continue_event_cancellation(first, uow, batch_size=2)
    assert uow.commits == commits and uow.events.rows[EVENT].orders_cancelled == 2
    assert await organiser.resume(uow) == [EVENT]
    chain_copy, resumed = continues(uow)[-2:]
    assert chain_copy == resumed == ContinueEventCancellation(event_id=EVENT, batch=2)
    await organiser.continue_event_cancellation(resumed, uow, batch_size=2)
    await organiser.continue_event_cancellation(chain_copy, uow, batch_size=2)  # stale now: nothing
    assert uow.events.rows[EVENT].orders_cancelled == 4
    await run_chain(uow, batch_size=2)
    assert uow.events.rows[EVENT].status is EventStatus.CANCELLED
    assert len([m for m in uow.published if isinstance(m, OrderCancelled)]) == 4  # each hold once
    assert await organiser.resume(uow) == []
