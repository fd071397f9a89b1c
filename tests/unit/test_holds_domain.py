"""The hold decision rules, without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.inventory.domain import (
    CheckoutRequest,
    Held,
    Rejected,
    StockLevel,
    can_transition,
    decide,
    held_deltas,
)
from shared.messages import OrderLine, OrderStatus, RejectReason

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EVENT = uuid.uuid4()


def level(
    capacity: int = 10,
    held: int = 0,
    sold: int = 0,
    limit: int = 4,
    event: uuid.UUID = EVENT,
    starts_at: datetime = NOW + timedelta(days=30),
) -> StockLevel:
    return StockLevel(uuid.uuid4(), event, 50_000, capacity, held, sold, limit, 900, starts_at)


def request(user: str, *lines: tuple[StockLevel, int]) -> CheckoutRequest:
    return CheckoutRequest(
        uuid.uuid4(), user, tuple(OrderLine(ticket_type_id=s.ticket_type_id, quantity=q) for s, q in lines)
    )


def test_holds_until_capacity_then_rejects_as_sold_out() -> None:
    a = level(capacity=3)
    stock = {a.ticket_type_id: a}
    decisions = decide([request(f"u{i}", (a, 1)) for i in range(5)], stock, {}, NOW, 20)
    assert [type(d) for d in decisions] == [Held, Held, Held, Rejected, Rejected]
    assert all(d.reason is RejectReason.SOLD_OUT for d in decisions if isinstance(d, Rejected))
    assert a.held == 3 and a.available == 0


def test_multi_item_order_is_all_or_nothing() -> None:
    a, b = level(capacity=5), level(capacity=1)
    stock = {a.ticket_type_id: a, b.ticket_type_id: b}
    first = decide([request("u1", (a, 2), (b, 1))], stock, {}, NOW, 20)[0]
    second = decide([request("u2", (a, 2), (b, 1))], stock, {}, NOW, 20)[0]
    assert isinstance(first, Held) and first.total == 3 * 50_000
    assert isinstance(second, Rejected) and second.reason is RejectReason.SOLD_OUT
    assert (a.held, b.held) == (2, 1), "the rejected order must not keep part of its hold"


def test_per_user_limit_counts_what_the_buyer_already_holds() -> None:
    a = level(capacity=100, limit=4)
    holdings = {("alice", a.ticket_type_id): 3}
    decisions = decide(
        [request("alice", (a, 1)), request("alice", (a, 1)), request("bob", (a, 4))],
        {a.ticket_type_id: a},
        holdings,
        NOW,
        20,
    )
    assert isinstance(decisions[0], Held)
    assert isinstance(decisions[1], Rejected) and decisions[1].reason is RejectReason.LIMIT_EXCEEDED
    assert isinstance(decisions[2], Held)
    assert holdings[("alice", a.ticket_type_id)] == 4


def test_unknown_ticket_type_oversized_and_mixed_events_are_invalid() -> None:
    a, b, other = level(limit=20), level(limit=20), level(event=uuid.uuid4())
    stock = {a.ticket_type_id: a, b.ticket_type_id: b, other.ticket_type_id: other}
    ghost = CheckoutRequest(uuid.uuid4(), "u", (OrderLine(ticket_type_id=uuid.uuid4(), quantity=1),))
    too_many = request("u", (a, 15), (b, 15))  # each line is within the limit, the order is not
    mixed = request("u", (a, 1), (other, 1))
    d = decide([ghost, too_many, mixed], stock, {}, NOW, 20)
    assert [x.reason for x in d if isinstance(x, Rejected)] == [
        RejectReason.UNKNOWN_TICKET_TYPE,
        RejectReason.INVALID_ORDER,
        RejectReason.INVALID_ORDER,
    ]
    assert a.held == 0 and b.held == 0 and other.held == 0


def test_sales_close_when_the_event_starts() -> None:
    a = level(starts_at=NOW - timedelta(minutes=1))
    d = decide([request("u", (a, 1))], {a.ticket_type_id: a}, {}, NOW, 20)[0]
    assert isinstance(d, Rejected) and d.reason is RejectReason.SALES_CLOSED


def test_duplicate_lines_are_merged_and_deltas_summed() -> None:
    a = level(capacity=10, limit=10)
    req = CheckoutRequest(
        uuid.uuid4(),
        "u",
        (
            OrderLine(ticket_type_id=a.ticket_type_id, quantity=2),
            OrderLine(ticket_type_id=a.ticket_type_id, quantity=3),
        ),
    )
    decisions = decide([req, request("v", (a, 1))], {a.ticket_type_id: a}, {}, NOW, 20)
    assert held_deltas(decisions) == {a.ticket_type_id: 6}


def test_state_machine_has_one_way_out_of_each_state() -> None:
    assert can_transition(OrderStatus.PENDING, OrderStatus.EXPIRED)
    assert can_transition(OrderStatus.PENDING, OrderStatus.PAID)
    assert not can_transition(OrderStatus.EXPIRED, OrderStatus.CANCELLED)
    assert not can_transition(OrderStatus.PAID, OrderStatus.EXPIRED)
    assert not can_transition(OrderStatus.REJECTED, OrderStatus.PENDING)
