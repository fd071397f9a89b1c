"""Inventory's handlers against a fake unit of work: what each command and event does to orders, stock and the
messages published (no database, no broker; the end-to-end tests prove the same against the real servers)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest

from services.inventory import handlers, releases, sales
from services.inventory.domain import IllegalTransition, Order, StockLevel
from services.inventory.holds import HoldBatcher
from shared.messages import (
    AddTicketType,
    CancelOrder,
    CancelOutcome,
    CatalogOutcome,
    CheckoutRequested,
    CreateEvent,
    EventCreated,
    NewTicketType,
    OrderCancelled,
    OrderExpired,
    OrderLine,
    OrderPaid,
    OrderRefunded,
    OrderRefundPending,
    OrderStatus,
    PaymentRefunded,
    PaymentSucceeded,
    PricedLine,
    StockChanged,
    TicketTypeAdded,
)
from shared.messaging import PermanentError
from tests.unit.fakes import NOW, FakeInventoryUnitOfWork

EVENT = uuid.uuid4()


def stock_of(uow: FakeInventoryUnitOfWork, capacity: int = 10, held: int = 0, sold: int = 0) -> StockLevel:
    level = StockLevel(uuid.uuid4(), EVENT, 100_000, capacity, held, sold, 4, 900, NOW + timedelta(days=30))
    uow.stock.levels[level.ticket_type_id] = level
    return level


def order_in(
    uow: FakeInventoryUnitOfWork,
    level: StockLevel,
    status: OrderStatus,
    quantity: int = 2,
    user: str = "lan",
    expires_in: float = 600,
) -> Order:
    order = Order(
        id=uuid.uuid4(),
        user_id=user,
        user_email=f"{user}@example.com",
        locale="vi",
        status=status,
        total=quantity * level.price,
        event_id=EVENT,
        expires_at=NOW + timedelta(seconds=expires_in),
        lines=(PricedLine(ticket_type_id=level.ticket_type_id, quantity=quantity, unit_price=level.price),),
    )
    if status is OrderStatus.PENDING:
        level.held += quantity
        uow.stock.held_by[(user, level.ticket_type_id)] = quantity
    elif status is OrderStatus.PAID:
        level.sold += quantity
        uow.stock.held_by[(user, level.ticket_type_id)] = quantity
    return uow.orders.put(order)


def paid(order: Order, txn_ref: str = "ref-1") -> PaymentSucceeded:
    return PaymentSucceeded(order_id=order.id, provider="vnpay", txn_ref=txn_ref, amount=order.total, paid_at=NOW)


def kinds(uow: FakeInventoryUnitOfWork) -> list[str]:
    return [type(m).__name__ for m in uow.published]


# --- cancel ------------------------------------------------------------------------------------------


async def test_the_buyer_cancels_a_held_order_and_its_stock_comes_back() -> None:
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow)
    order = order_in(uow, level, OrderStatus.PENDING, quantity=2)
    answer = await handlers.cancel_order(CancelOrder(order_id=order.id, user_id="lan"), uow)
    assert answer.outcome is CancelOutcome.CANCELLED and answer.order is not None
    assert answer.order.status is OrderStatus.CANCELLED
    assert (level.held, uow.stock.held_by[("lan", level.ticket_type_id)]) == (0, 0)
    assert kinds(uow) == ["StockChanged", "OrderCancelled"] and uow.commits == 1
    assert isinstance(uow.published[1], OrderCancelled) and uow.published[1].items == list(order.lines)


async def test_another_buyers_order_cannot_be_cancelled_and_a_paid_one_is_not_pending() -> None:
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow)
    held, sold = order_in(uow, level, OrderStatus.PENDING), order_in(uow, level, OrderStatus.PAID)
    assert (await handlers.cancel_order(CancelOrder(order_id=held.id, user_id="mai"), uow)).outcome is (
        CancelOutcome.NOT_FOUND
    )
    answer = await handlers.cancel_order(CancelOrder(order_id=sold.id, user_id="lan"), uow)
    assert answer.outcome is CancelOutcome.NOT_PENDING and answer.order and answer.order.status is OrderStatus.PAID
    assert uow.published == [] and uow.commits == 0 and level.held == 2


# --- release -----------------------------------------------------------------------------------------


async def test_expiry_releases_only_due_pending_orders() -> None:
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow)
    due = order_in(uow, level, OrderStatus.PENDING, quantity=1, user="a", expires_in=-1)
    not_yet = order_in(uow, level, OrderStatus.PENDING, quantity=1, user="b", expires_in=60)
    async with uow:
        released = await releases.release(
            uow, await uow.orders.lock_pending([due.id, not_yet.id], due_only=True), "expire"
        )
        await uow.commit()
    assert [o.id for o in released] == [due.id]
    assert uow.orders.rows[due.id].status is OrderStatus.EXPIRED
    assert uow.orders.rows[not_yet.id].status is OrderStatus.PENDING and level.held == 1
    assert [type(m) for m in uow.published] == [StockChanged, OrderExpired]


# --- payments ----------------------------------------------------------------------------------------


async def test_a_payment_on_time_sells_the_held_tickets_and_issues_them_once() -> None:
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow)
    order = order_in(uow, level, OrderStatus.PENDING, quantity=2)
    await sales.payment_succeeded(paid(order), uow)
    assert uow.orders.rows[order.id].status is OrderStatus.PAID
    assert (level.held, level.sold) == (0, 2)
    paid_event = next(m for m in uow.published if isinstance(m, OrderPaid))
    assert len(paid_event.tickets) == 2 and paid_event.total == order.total
    await sales.payment_succeeded(paid(order), uow)  # a redelivery changes nothing
    assert uow.commits == 1 and (level.held, level.sold) == (0, 2)
    with pytest.raises(PermanentError, match="second payment"):
        await sales.payment_succeeded(paid(order, "ref-2"), uow)


async def test_a_late_payment_takes_free_stock_again_or_is_refunded() -> None:
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow, capacity=2)
    lucky = order_in(uow, level, OrderStatus.EXPIRED, quantity=1, user="a")
    await sales.payment_succeeded(paid(lucky, "ref-a"), uow)
    assert uow.orders.rows[lucky.id].status is OrderStatus.PAID and level.sold == 1
    assert uow.sales.settlements[lucky.id]["late"] is True

    level.held = 1  # the last ticket is held by someone else now
    unlucky = order_in(uow, level, OrderStatus.CANCELLED, quantity=1, user="b")
    await sales.payment_succeeded(paid(unlucky, "ref-b"), uow)
    assert uow.orders.rows[unlucky.id].status is OrderStatus.REFUND_PENDING and level.sold == 1
    assert isinstance(uow.published[-1], OrderRefundPending) and uow.published[-1].amount == unlucky.total

    await sales.payment_refunded(
        PaymentRefunded(order_id=unlucky.id, provider="vnpay", txn_ref="ref-b", amount=unlucky.total, refunded_at=NOW),
        uow,
    )
    assert uow.orders.rows[unlucky.id].status is OrderStatus.REFUNDED
    assert isinstance(uow.published[-1], OrderRefunded)
    assert uow.sales.settlements[unlucky.id]["outcome"] is OrderStatus.REFUNDED


async def test_a_wrong_amount_is_a_permanent_error_and_changes_nothing() -> None:
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow)
    order = order_in(uow, level, OrderStatus.PENDING)
    with pytest.raises(PermanentError, match="VND"):
        await sales.payment_succeeded(paid(order).model_copy(update={"amount": 1}), uow)
    assert uow.orders.rows[order.id].status is OrderStatus.PENDING and uow.commits == 0


# --- catalog -----------------------------------------------------------------------------------------


async def test_creating_an_event_twice_creates_it_once_and_adding_a_type_needs_the_event() -> None:
    uow = FakeInventoryUnitOfWork()
    new_type = NewTicketType(ticket_type_id=uuid.uuid4(), name="A", price=1, capacity=5)
    cmd = CreateEvent(
        event_id=uuid.uuid4(), title="Đêm nhạc", venue="V", city="Huế", starts_at=NOW, ticket_types=[new_type]
    )
    assert (await handlers.create_event(cmd, uow)).outcome is CatalogOutcome.CREATED
    assert (await handlers.create_event(cmd, uow)).outcome is CatalogOutcome.ALREADY_EXISTED
    assert [type(m) for m in uow.published] == [EventCreated]
    extra = NewTicketType(ticket_type_id=uuid.uuid4(), name="B", price=2, capacity=5)
    added = await handlers.add_ticket_type(AddTicketType(event_id=cmd.event_id, ticket_type=extra), uow)
    assert added.outcome is CatalogOutcome.CREATED
    assert isinstance(uow.published[-1], TicketTypeAdded) and uow.published[-1].ticket_type_id == extra.ticket_type_id
    missing = await handlers.add_ticket_type(AddTicketType(event_id=uuid.uuid4(), ticket_type=extra), uow)
    assert missing.outcome is CatalogOutcome.EVENT_NOT_FOUND and uow.commits == 2


# --- the aggregate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "move"),
    [
        (OrderStatus.PAID, "expire"),
        (OrderStatus.EXPIRED, "cancel"),
        (OrderStatus.REFUNDED, "pay"),
        (OrderStatus.REJECTED, "pay"),
        (OrderStatus.PENDING, "refunded"),
    ],
)
def test_an_illegal_move_is_a_domain_error(start: OrderStatus, move: str) -> None:
    order = Order(id=uuid.uuid4(), user_id="u", user_email="", locale="vi", status=start)
    with pytest.raises(IllegalTransition):
        getattr(order, move)(*((1, "x") if move == "refunded" else ()))
    assert order.status is start and order.events == []


def test_a_batch_schedules_one_delay_message_per_hold_duration() -> None:
    from services.inventory.domain import expiries_due

    def held(seconds: int | None) -> Order:
        return Order(
            id=uuid.uuid4(),
            user_id="u",
            user_email="",
            locale="vi",
            status=OrderStatus.PENDING,
            hold_seconds=seconds,
            expires_at=None if seconds is None else NOW + timedelta(seconds=seconds),
        )

    short, short2, long_, rejected = held(60), held(60), held(900), held(None)
    due = dict(expiries_due([short, long_, short2, rejected]))
    assert set(due) == {60, 900}
    assert due[60].all_order_ids == [short.id, short2.id] and due[60].expires_at == NOW + timedelta(seconds=60)
    assert due[900].all_order_ids == [long_.id]


# --- the hold batch's answer ---------------------------------------------------------------------------


class DelayQueues:
    async def ensure_hold_delay_queue(self, hold_seconds: int) -> str:
        return f"delay-{hold_seconds}"


async def test_the_batch_that_sells_out_names_the_stock_version_its_message_carries() -> None:
    """The gateway's gate closes at this version and ignores any stock.changed not newer (soldout.py)."""
    uow = FakeInventoryUnitOfWork()
    level = stock_of(uow, capacity=2)
    level.stock_version = 41
    cmds = [
        CheckoutRequested(
            order_id=uuid.uuid4(),
            user_id=f"buyer-{i}",
            user_email=f"b{i}@example.com",
            locale="vi",
            items=[OrderLine(ticket_type_id=level.ticket_type_id, quantity=1)],
            request_hash=f"h{i}",
        )
        for i in range(3)
    ]
    batcher = HoldBatcher(uow, DelayQueues(), SimpleNamespace(hold_batch_max=64))  # type: ignore[arg-type]
    outcomes = await batcher.decide(cmds, ["c0", "c1", "c2"])
    (change,) = [m for m in uow.published if isinstance(m, StockChanged)]
    assert change.stock_version == 42 and change.held == 2
    assert [outcomes[c.order_id].order.status for c in cmds] == [OrderStatus.PENDING] * 2 + [OrderStatus.REJECTED]
    assert all(o.sold_out == {level.ticket_type_id: 42} for o in outcomes.values())
