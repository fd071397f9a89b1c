"""Inventory rules with no I/O: which checkouts in a batch are held, and the order state machine.

The store locks the ticket types a batch touches and hands their stock levels here; ``decide`` walks the
requests in arrival order and either holds all of an order's lines or none of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from shared.messages import OrderLine, OrderStatus, PricedLine, RejectReason

# Which status may follow which. Every transition is one conditional UPDATE guarded by the old status.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.PAID, OrderStatus.EXPIRED, OrderStatus.CANCELLED}
    ),
    OrderStatus.EXPIRED: frozenset({OrderStatus.PAID, OrderStatus.REFUND_PENDING}),
    OrderStatus.CANCELLED: frozenset({OrderStatus.PAID, OrderStatus.REFUND_PENDING}),
    OrderStatus.REFUND_PENDING: frozenset({OrderStatus.REFUNDED}),
}
RELEASABLE = OrderStatus.PENDING


def can_transition(current: OrderStatus, new: OrderStatus) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


@dataclass
class StockLevel:
    ticket_type_id: UUID
    event_id: UUID
    price: int
    capacity: int
    held: int
    sold: int
    per_user_limit: int
    hold_seconds: int
    starts_at: datetime

    @property
    def available(self) -> int:
        return self.capacity - self.held - self.sold


@dataclass(frozen=True)
class CheckoutRequest:
    order_id: UUID
    user_id: str
    items: tuple[OrderLine, ...]


@dataclass(frozen=True)
class Held:
    order_id: UUID
    event_id: UUID
    lines: tuple[PricedLine, ...]
    total: int
    hold_seconds: int


@dataclass(frozen=True)
class Rejected:
    order_id: UUID
    reason: RejectReason
    detail: str


Decision = Held | Rejected


def merge_lines(items: Iterable[OrderLine]) -> dict[UUID, int]:
    """Quantities per ticket type, in ticket type order (the same line twice is one line)."""
    merged: dict[UUID, int] = {}
    for line in items:
        merged[line.ticket_type_id] = merged.get(line.ticket_type_id, 0) + line.quantity
    return dict(sorted(merged.items()))


def decide(
    requests: Sequence[CheckoutRequest],
    stock: dict[UUID, StockLevel],
    holdings: dict[tuple[str, UUID], int],
    now: datetime,
    max_quantity: int,
) -> list[Decision]:
    """Decide each request in order, updating ``stock`` and ``holdings`` in place for the held ones."""
    return [_decide_one(r, stock, holdings, now, max_quantity) for r in requests]


def _decide_one(
    req: CheckoutRequest,
    stock: dict[UUID, StockLevel],
    holdings: dict[tuple[str, UUID], int],
    now: datetime,
    max_quantity: int,
) -> Decision:
    lines = merge_lines(req.items)
    unknown = [str(t) for t in lines if t not in stock]
    if unknown:
        return Rejected(req.order_id, RejectReason.UNKNOWN_TICKET_TYPE, f"unknown ticket type {unknown[0]}")
    if sum(lines.values()) > max_quantity:
        return Rejected(req.order_id, RejectReason.INVALID_ORDER, f"at most {max_quantity} tickets per order")
    events = {stock[t].event_id for t in lines}
    if len(events) > 1:
        return Rejected(req.order_id, RejectReason.INVALID_ORDER, "all tickets of an order must be for one event")
    for tt, qty in lines.items():
        level = stock[tt]
        if level.starts_at <= now:
            return Rejected(req.order_id, RejectReason.SALES_CLOSED, "the event has already started")
        already = holdings.get((req.user_id, tt), 0)
        if already + qty > level.per_user_limit:
            return Rejected(
                req.order_id,
                RejectReason.LIMIT_EXCEEDED,
                f"at most {level.per_user_limit} tickets of this type per buyer; you hold {already}",
            )
    for tt, qty in lines.items():
        if stock[tt].available < qty:
            return Rejected(req.order_id, RejectReason.SOLD_OUT, f"only {max(stock[tt].available, 0)} left")
    priced = []
    for tt, qty in lines.items():
        level = stock[tt]
        level.held += qty
        holdings[(req.user_id, tt)] = holdings.get((req.user_id, tt), 0) + qty
        priced.append(PricedLine(ticket_type_id=tt, quantity=qty, unit_price=level.price))
    first = stock[next(iter(lines))]
    return Held(
        order_id=req.order_id,
        event_id=first.event_id,
        lines=tuple(priced),
        total=sum(p.quantity * p.unit_price for p in priced),
        hold_seconds=first.hold_seconds,
    )


def held_deltas(decisions: Iterable[Decision]) -> dict[UUID, int]:
    deltas: dict[UUID, int] = {}
    for d in decisions:
        if isinstance(d, Held):
            for line in d.lines:
                deltas[line.ticket_type_id] = deltas.get(line.ticket_type_id, 0) + line.quantity
    return dict(sorted(deltas.items()))


def http_status(reason: RejectReason) -> int:
    """How the gateway answers a rejection: 409 when the stock or the sale is gone, 422 for the buyer's input."""
    return 409 if reason in (RejectReason.SOLD_OUT, RejectReason.SALES_CLOSED) else 422
