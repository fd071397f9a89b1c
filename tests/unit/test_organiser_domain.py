"""The organiser's rules without I/O: an order refunded by the organiser, an event's cancellation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.inventory.domain import (
    CheckoutRequest,
    Event,
    IllegalEventTransition,
    IllegalTransition,
    Order,
    Rejected,
    StockLevel,
    cancellation_progress,
    decide,
)
from shared.messages import (
    EventStatus,
    OrderCancelled,
    OrderLine,
    OrderRefundPending,
    OrderStatus,
    PricedLine,
    RefundCause,
    RejectReason,
    ReleaseCause,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
EVENT = uuid.uuid4()
TT = uuid.uuid4()


def order(status: OrderStatus, quantity: int = 2) -> Order:
    return Order(
        id=uuid.uuid4(),
        user_id="lan",
        user_email="lan@example.com",
        locale="vi",
        status=status,
        total=quantity * 100_000,
        event_id=EVENT,
        lines=(PricedLine(ticket_type_id=TT, quantity=quantity, unit_price=100_000),),
    )


def test_the_organiser_refunds_a_paid_order_and_its_stock_comes_back() -> None:
    o = order(OrderStatus.PAID)
    effect = o.refund("refunded by the organiser", RefundCause.ORGANISER)
    assert o.status is OrderStatus.REFUND_PENDING and o.refund_cause is RefundCause.ORGANISER
    assert effect.sold == {TT: -2} and effect.held == {} and effect.holdings == {("lan", TT): -2}
    [message] = o.events
    assert isinstance(message, OrderRefundPending)
    assert (message.amount, message.cause) == (200_000, RefundCause.ORGANISER)


@pytest.mark.parametrize(
    "status",
    [OrderStatus.PENDING, OrderStatus.EXPIRED, OrderStatus.CANCELLED, OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED],
)
def test_only_a_paid_order_can_be_refunded_by_the_organiser(status: OrderStatus) -> None:
    o = order(status)
    with pytest.raises(IllegalTransition):
        o.refund("refunded by the organiser", RefundCause.ORGANISER)
    assert o.status is status and o.events == []


def test_a_hold_cancelled_with_its_event_tells_the_buyer_why() -> None:
    o = order(OrderStatus.PENDING)
    effect = o.cancel_for_event()
    assert o.status is OrderStatus.CANCELLED and effect.held == {TT: -2} and effect.holdings == {("lan", TT): -2}
    assert isinstance(o.events[0], OrderCancelled) and o.events[0].cause is ReleaseCause.EVENT_CANCELLED
    buyer = order(OrderStatus.PENDING)
    buyer.cancel()
    assert isinstance(buyer.events[0], OrderCancelled) and buyer.events[0].cause is ReleaseCause.BUYER


def test_an_event_is_cancelled_in_batches_and_never_twice() -> None:
    ev = Event(id=EVENT, status=EventStatus.ON_SALE)
    ev.begin_cancel("user:organiser")
    assert ev.status is EventStatus.CANCELLING and ev.next_batch == 1
    with pytest.raises(IllegalEventTransition):
        ev.begin_cancel("user:again")
    held, sold = order(OrderStatus.PENDING, 1), order(OrderStatus.PAID, 3)
    effect = ev.cancel_batch([held, sold])
    assert (held.status, sold.status) == (OrderStatus.CANCELLED, OrderStatus.REFUND_PENDING)
    assert effect.held == {TT: -1} and effect.sold == {TT: -3}
    assert (ev.orders_cancelled, ev.orders_sent_to_refund, ev.cancel_batches) == (1, 1, 1)
    assert ev.is_next(2) and not ev.is_next(1)  # a stale copy of batch 1 changes nothing
    ev.finish()
    assert ev.status is EventStatus.CANCELLED and not ev.is_next(2)
    with pytest.raises(IllegalEventTransition):
        ev.cancel_batch([])
    with pytest.raises(IllegalEventTransition):
        Event(id=EVENT, status=EventStatus.ON_SALE).finish()


def test_progress_counts_what_is_left_and_what_is_done() -> None:
    ev = Event(id=EVENT, status=EventStatus.CANCELLING, cancel_batches=3, orders_cancelled=5, orders_sent_to_refund=4)
    p = cancellation_progress(ev, pending=7, paid=2, refund_pending=3)
    assert (p.pending_to_cancel, p.paid_to_refund, p.refunds_pending, p.done, p.batches) == (7, 2, 3, 6, 3)
    on_sale = cancellation_progress(Event(id=EVENT, status=EventStatus.ON_SALE), pending=7, paid=2, refund_pending=1)
    assert (on_sale.pending_to_cancel, on_sale.paid_to_refund, on_sale.done) == (0, 0, 0)


def level(status: EventStatus) -> StockLevel:
    return StockLevel(TT, EVENT, 100_000, 10, 0, 0, 4, 900, NOW + timedelta(days=30), status)


@pytest.mark.parametrize("status", [EventStatus.CANCELLING, EventStatus.CANCELLED])
def test_the_hold_decision_refuses_an_event_being_cancelled(status: EventStatus) -> None:
    req = CheckoutRequest(uuid.uuid4(), "lan", (OrderLine(ticket_type_id=TT, quantity=1),))
    stock = {TT: level(status)}
    [decision] = decide([req], stock, {}, NOW, 20)
    assert isinstance(decision, Rejected) and decision.reason is RejectReason.EVENT_CANCELLED
    assert stock[TT].held == 0


def test_a_late_payment_for_a_cancelled_event_is_refunded_even_with_stock_free() -> None:
    o = order(OrderStatus.EXPIRED, 1)
    o.pay_late({TT: level(EventStatus.CANCELLED)}, {}, 100_000, "paid after the hold expired")
    assert o.status is OrderStatus.REFUND_PENDING and o.refund_cause is RefundCause.EVENT_CANCELLED
    assert isinstance(o.events[0], OrderRefundPending) and o.events[0].cause is RefundCause.EVENT_CANCELLED
    on_sale = order(OrderStatus.EXPIRED, 1)
    on_sale.pay_late({TT: level(EventStatus.ON_SALE)}, {}, 100_000, "paid after the hold expired")
    assert on_sale.status is OrderStatus.PAID
