"""Inventory rules with no I/O: the Order aggregate and its state machine, and which checkouts of a batch are
held.

An ``Order`` owns its life: every change of status goes through one of its methods, which checks the move
against ``TRANSITIONS`` (an illegal one raises ``IllegalTransition``), records the events to publish and returns
the stock it moves. The store locks the rows first and persists what the aggregate decided, each status change
as one UPDATE guarded by the status it was loaded in.

``decide`` walks a batch of checkout requests in arrival order over the locked stock levels and either holds
all of an order's lines or none of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from shared.cancellation import progress_of
from shared.messages import (
    CancellationProgress,
    CheckInOutcome,
    EventStatus,
    HoldExpiryDue,
    Message,
    OrderCancelled,
    OrderExpired,
    OrderHeld,
    OrderLine,
    OrderRefunded,
    OrderRefundPending,
    OrderReleased,
    OrdersHeld,
    OrderStatus,
    OrderView,
    PricedLine,
    RefundCause,
    RejectReason,
    ReleaseCause,
)

K = TypeVar("K")

# Which status may follow which (docs/ARCHITECTURE.md, "An order's life").
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.REQUESTED: frozenset({OrderStatus.PENDING, OrderStatus.REJECTED}),
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.EXPIRED, OrderStatus.CANCELLED}),
    # The organiser refunds a sale (one order, or every order of a cancelled event): the stock comes back.
    OrderStatus.PAID: frozenset({OrderStatus.REFUND_PENDING}),
    # A payment that arrives after the hold ended: re-held and paid, or refunded.
    OrderStatus.EXPIRED: frozenset({OrderStatus.PAID, OrderStatus.REFUND_PENDING}),
    OrderStatus.CANCELLED: frozenset({OrderStatus.PAID, OrderStatus.REFUND_PENDING}),
    OrderStatus.REFUND_PENDING: frozenset({OrderStatus.REFUNDED}),
}
LATE_PAYABLE = (OrderStatus.EXPIRED, OrderStatus.CANCELLED)
EVENT_CANCELLED_REASON = "the organiser cancelled the event"
ORGANISER_REFUND_REASON = "refunded by the organiser"


class DomainError(Exception):
    """A rule of the domain refused the change (the handler decides what the caller is told)."""


class IllegalTransition(DomainError):
    def __init__(self, order_id: UUID, current: OrderStatus, new: OrderStatus) -> None:
        super().__init__(f"order {order_id} cannot go from {current.value} to {new.value}")
        self.current, self.new = current, new


def can_transition(current: OrderStatus, new: OrderStatus) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


@dataclass
class StockEffect:
    """What a change does to the stock counters and to the buyers' per-type holdings (all deltas)."""

    held: dict[UUID, int] = field(default_factory=dict)
    sold: dict[UUID, int] = field(default_factory=dict)
    holdings: dict[tuple[str, UUID], int] = field(default_factory=dict)

    def add(self, other: StockEffect) -> StockEffect:
        _merge(self.held, other.held)
        _merge(self.sold, other.sold)
        _merge(self.holdings, other.holdings)
        return self

    @property
    def ticket_type_ids(self) -> list[UUID]:
        return sorted(set(self.held) | set(self.sold))


def _merge(into: dict[K, int], more: dict[K, int]) -> None:
    for key, delta in more.items():
        into[key] = into.get(key, 0) + delta


@dataclass
class Order:
    """The aggregate: an order, its lines, and the one place its status changes."""

    id: UUID
    user_id: str
    user_email: str
    locale: str
    status: OrderStatus
    total: int = 0
    lines: tuple[PricedLine, ...] = ()
    event_id: UUID | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None
    hold_seconds: int | None = None  # how long the hold placed by ``hold`` lasts (its delay queue's TTL)
    reason: RejectReason | None = None  # why a REJECTED order was refused
    detail: str | None = None
    loaded_status: OrderStatus | None = None  # what the store's guarded UPDATE expects to find
    refund_cause: RefundCause | None = None  # set when this order was just sent to refund
    events: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.loaded_status is None:
            self.loaded_status = self.status

    def _move(self, new: OrderStatus) -> None:
        if not can_transition(self.status, new):
            raise IllegalTransition(self.id, self.status, new)
        self.status = new

    def _per_line(self, sign: int) -> dict[UUID, int]:
        return {line.ticket_type_id: sign * line.quantity for line in self.lines}

    def _holdings(self, sign: int) -> dict[tuple[str, UUID], int]:
        return {(self.user_id, line.ticket_type_id): sign * line.quantity for line in self.lines}

    # --- placing -----------------------------------------------------------------------------------

    def hold(self, decision: Held, now: datetime) -> None:
        """REQUESTED -> PENDING: the stock is taken (``decide`` already counted it) until ``expires_at``."""
        self._move(OrderStatus.PENDING)
        self.event_id, self.lines, self.total = decision.event_id, decision.lines, decision.total
        self.hold_seconds = decision.hold_seconds
        self.created_at, self.expires_at = now, now + timedelta(seconds=decision.hold_seconds)
        self.events.append(
            OrderHeld(**self._buyer(), items=list(decision.lines), total=decision.total, expires_at=self.expires_at)
        )

    def reject(self, decision: Rejected, now: datetime) -> None:
        """REQUESTED -> REJECTED: nothing was taken; the reason is kept for the buyer."""
        self._move(OrderStatus.REJECTED)
        self.reason, self.detail, self.created_at = decision.reason, decision.detail, now

    def view(self) -> OrderView:
        return OrderView(
            order_id=self.id,
            user_id=self.user_id,
            status=self.status,
            total=self.total,
            items=list(self.lines),
            expires_at=self.expires_at,
            reason=self.reason.value if self.reason else None,
            detail=self.detail,
            created_at=self.created_at,
        )

    # --- releasing ---------------------------------------------------------------------------------

    def expire(self) -> StockEffect:
        """PENDING -> EXPIRED: the stock comes back on sale."""
        return self._release(OrderStatus.EXPIRED, OrderExpired)

    def cancel(self) -> StockEffect:
        """PENDING -> CANCELLED (by the buyer or an operator): the stock comes back on sale."""
        return self._release(OrderStatus.CANCELLED, OrderCancelled)

    def cancel_for_event(self) -> StockEffect:
        """PENDING -> CANCELLED because the organiser cancelled the event: as a cancel, and the buyer is told."""
        return self._release(OrderStatus.CANCELLED, OrderCancelled, ReleaseCause.EVENT_CANCELLED)

    def _release(
        self, status: OrderStatus, kind: type[OrderReleased], cause: ReleaseCause = ReleaseCause.BUYER
    ) -> StockEffect:
        self._move(status)
        self.events.append(kind(**self._buyer(), status=status, items=list(self.lines), cause=cause))
        return StockEffect(held=self._per_line(-1), holdings=self._holdings(-1))

    # --- paying ------------------------------------------------------------------------------------

    def pay(self) -> StockEffect:
        """PENDING -> PAID: the held stock becomes sold (the order stays counted in the buyer's holdings)."""
        self._move(OrderStatus.PAID)
        return StockEffect(held=self._per_line(-1), sold=self._per_line(1))

    def pay_late(
        self, stock: dict[UUID, StockLevel], holdings: dict[tuple[str, UUID], int], amount: int, reason: str
    ) -> StockEffect:
        """EXPIRED/CANCELLED -> PAID when the stock and the buyer's limit still allow it (the stock is taken
        again), else -> REFUND_PENDING (nothing moves; the money goes back)."""
        if self.status not in LATE_PAYABLE:
            raise IllegalTransition(self.id, self.status, OrderStatus.PAID)
        if stock_still_free(self.lines, stock, holdings, self.user_id):
            self._move(OrderStatus.PAID)
            return StockEffect(sold=self._per_line(1), holdings=self._holdings(1))
        self._move(OrderStatus.REFUND_PENDING)
        self.refund_cause = RefundCause.LATE_PAYMENT
        if any(
            stock[line.ticket_type_id].event_status is not EventStatus.ON_SALE
            for line in self.lines
            if line.ticket_type_id in stock
        ):
            self.refund_cause, reason = RefundCause.EVENT_CANCELLED, EVENT_CANCELLED_REASON
        self.events.append(OrderRefundPending(**self._buyer(), amount=amount, reason=reason, cause=self.refund_cause))
        return StockEffect()

    def refund(self, reason: str, cause: RefundCause) -> StockEffect:
        """PAID -> REFUND_PENDING by the organiser: the tickets are void and their stock is back on sale at once
        (sold -= q, the buyer's holdings reduced); the payment service asks the provider for the money."""
        if self.status is not OrderStatus.PAID:  # EXPIRED -> REFUND_PENDING is a late payment's, not this
            raise IllegalTransition(self.id, self.status, OrderStatus.REFUND_PENDING)
        self._move(OrderStatus.REFUND_PENDING)
        self.refund_cause = cause
        self.events.append(OrderRefundPending(**self._buyer(), amount=self.total, reason=reason, cause=cause))
        return StockEffect(sold=self._per_line(-1), holdings=self._holdings(-1))

    def refunded(self, amount: int, reason: str, cause: RefundCause = RefundCause.LATE_PAYMENT) -> None:
        """REFUND_PENDING -> REFUNDED: the provider confirmed the refund."""
        self._move(OrderStatus.REFUNDED)
        self.events.append(OrderRefunded(**self._buyer(), amount=amount, reason=reason, cause=cause))

    def _buyer(self) -> dict[str, Any]:
        """Who an order's messages are about (the mailer writes to them)."""
        return {
            "order_id": self.id,
            "user_id": self.user_id,
            "user_email": self.user_email,
            "locale": self.locale,
            "event_id": self.event_id,
        }


def stock_still_free(
    lines: Sequence[PricedLine], stock: dict[UUID, StockLevel], holdings: dict[tuple[str, UUID], int], user_id: str
) -> bool:
    """Can a late payment take its tickets again? The event on sale, free stock for every line and within the
    per-user limit."""
    for line in lines:
        level = stock.get(line.ticket_type_id)
        if level is None or level.event_status is not EventStatus.ON_SALE or level.available < line.quantity:
            return False
        if holdings.get((user_id, line.ticket_type_id), 0) + line.quantity > level.per_user_limit:
            return False
    return True


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
    event_status: EventStatus = EventStatus.ON_SALE
    stock_version: int = 0  # moves with every change of held or sold (shared.messages.StockChanged)

    def __post_init__(self) -> None:
        self.event_status = EventStatus(self.event_status)

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
        if level.event_status is not EventStatus.ON_SALE:
            return Rejected(req.order_id, RejectReason.EVENT_CANCELLED, "the organiser cancelled the event")
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


def expiries_due(orders: Sequence[Order]) -> list[tuple[int, HoldExpiryDue]]:
    """One delay message per hold duration for the orders a batch held (they share their expiry): a delay
    queue's TTL, and what to release when it fires."""
    by_duration: dict[tuple[int, datetime], list[UUID]] = {}
    for order in orders:
        if order.hold_seconds is not None and order.expires_at is not None:
            by_duration.setdefault((order.hold_seconds, order.expires_at), []).append(order.id)
    return [
        (seconds, HoldExpiryDue(order_ids=ids, expires_at=expires_at))
        for (seconds, expires_at), ids in by_duration.items()
    ]


# --- the door ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketAtDoor:
    """What the door needs to know of a presented ticket: read with its order's row locked (FOR SHARE), so a
    refund or a cancellation of the order cannot change its status until the admission is decided."""

    ticket_id: UUID
    ticket_type_id: UUID
    event_id: UUID
    order_status: OrderStatus
    admitted_at: datetime | None


# Only a ticket of a PAID order lets its holder in; every other status (REFUND_PENDING, REFUNDED, CANCELLED, ...)
# voids the tickets the order was issued.
ADMITTING_STATUSES = frozenset({OrderStatus.PAID})


def admission(ticket: TicketAtDoor | None, event_id: UUID) -> CheckInOutcome:
    """Whether a presented ticket is let in at ``event_id``'s door. The order of the checks matters: a code of
    another event says only that (nothing of its order); a void ticket is refused even if it was admitted
    before (the holder may not come back in); an admitted one is refused with its first admission."""
    if ticket is None:
        return CheckInOutcome.NOT_FOUND
    if ticket.event_id != event_id:
        return CheckInOutcome.WRONG_EVENT
    if ticket.order_status not in ADMITTING_STATUSES:
        return CheckInOutcome.VOID
    if ticket.admitted_at is not None:
        return CheckInOutcome.ALREADY_ADMITTED
    return CheckInOutcome.ADMITTED


# --- an event's life: on sale, then (maybe) cancelled in batches ------------------------------------------

EVENT_TRANSITIONS: dict[EventStatus, frozenset[EventStatus]] = {
    EventStatus.ON_SALE: frozenset({EventStatus.CANCELLING}),
    EventStatus.CANCELLING: frozenset({EventStatus.CANCELLED}),
}


class IllegalEventTransition(DomainError):
    def __init__(self, event_id: UUID, current: EventStatus, new: EventStatus) -> None:
        super().__init__(f"event {event_id} cannot go from {current.value} to {new.value}")
        self.current, self.new = current, new


@dataclass
class Event:
    """The event as its cancellation sees it: its status and the durable progress of the batches."""

    id: UUID
    status: EventStatus
    cancel_batches: int = 0  # batches done so far: the next ContinueEventCancellation is batch + 1
    orders_cancelled: int = 0
    orders_sent_to_refund: int = 0
    cancelled_by: str | None = None
    loaded_status: EventStatus | None = None

    def __post_init__(self) -> None:
        self.status = EventStatus(self.status)
        if self.loaded_status is None:
            self.loaded_status = self.status

    def _move(self, new: EventStatus) -> None:
        if new not in EVENT_TRANSITIONS.get(self.status, frozenset()):
            raise IllegalEventTransition(self.id, self.status, new)
        self.status = new

    @property
    def next_batch(self) -> int:
        return self.cancel_batches + 1

    def begin_cancel(self, actor: str) -> None:
        """ON_SALE -> CANCELLING: nothing is sold from now on; the batches follow."""
        self._move(EventStatus.CANCELLING)
        self.cancelled_by = actor

    def is_next(self, batch: int) -> bool:
        """Whether ``batch`` is the one to do now (a stale or duplicated continue message is not)."""
        return self.status is EventStatus.CANCELLING and batch == self.next_batch

    def cancel_batch(self, orders: Sequence[Order]) -> StockEffect:
        """One batch: every PENDING order is cancelled, every PAID one sent to refund; the stock they move."""
        if self.status is not EventStatus.CANCELLING:
            raise IllegalEventTransition(self.id, self.status, EventStatus.CANCELLING)
        effect = StockEffect()
        for order in orders:
            if order.status is OrderStatus.PENDING:
                effect.add(order.cancel_for_event())
                self.orders_cancelled += 1
            else:
                effect.add(order.refund(EVENT_CANCELLED_REASON, RefundCause.EVENT_CANCELLED))
                self.orders_sent_to_refund += 1
        self.cancel_batches += 1
        return effect

    def finish(self) -> None:
        """CANCELLING -> CANCELLED: no PENDING or PAID order is left (refunds may still await the provider)."""
        self._move(EventStatus.CANCELLED)


def cancellation_progress(event: Event, pending: int, paid: int, refund_pending: int) -> CancellationProgress:
    """What the cancellation still has to do, from the event's counters and the live order counts."""
    return progress_of(
        event.id,
        event.status,
        orders_cancelled=event.orders_cancelled,
        orders_sent_to_refund=event.orders_sent_to_refund,
        batches=event.cancel_batches,
        pending=pending,
        paid=paid,
        refund_pending=refund_pending,
    )


def batch_events(orders: Sequence[Order]) -> list[tuple[UUID, Message]]:
    """The events of a batch's orders, each with the order it came from (for its correlation id), the
    ``OrderHeld`` of every order held in the batch sent together as one ``OrdersHeld``: one message per batch,
    not one per hold, for the payment service to register the batch's payment attempts at once."""
    held: list[OrderHeld] = []
    others: list[tuple[UUID, Message]] = []
    for order in orders:
        for event in order.events:
            if isinstance(event, OrderHeld):
                held.append(event)
            else:
                others.append((order.id, event))
    return ([(held[0].order_id, OrdersHeld(orders=held))] if held else []) + others
