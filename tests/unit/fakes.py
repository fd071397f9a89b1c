"""In-memory fakes of the services' units of work (inventory's repositories here), for handler tests (the
cosmicpython book's FakeUnitOfWork). ``FakeInventoryUnitOfWork`` fits ``AbstractInventoryUnitOfWork``, the
protocol inventory's handlers take (``services/inventory/uow.py``): mypy checks it wherever a test passes it.

The fakes keep the same promises as the real repositories where the handlers rely on them: a saved order's
status only moves from the status it was loaded in, stock counters never go below zero, and nothing emitted is
published unless the unit of work commits.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from uuid import UUID

from services.inventory.domain import Event, Order, StockEffect, StockLevel, TicketAtDoor
from shared.messages import (
    CreateEvent,
    EventInfo,
    IssuedTicket,
    Message,
    NewTicketType,
    OrderStatus,
    OrderView,
    PaymentSucceeded,
    RefundCause,
    StockChanged,
    TicketTypeInfo,
)
from shared.uow import AbstractUnitOfWork

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class FakeOrders:
    def __init__(self) -> None:
        self.rows: dict[UUID, Order] = {}
        self.hashes: dict[UUID, str] = {}

    def put(self, order: Order) -> Order:
        self.rows[order.id] = copy.deepcopy(order)
        return order

    def _copy(self, order_id: UUID) -> Order:
        order = copy.deepcopy(self.rows[order_id])
        order.events, order.loaded_status = [], order.status
        return order

    async def add(self, orders: Sequence[Order], request_hashes: Sequence[str]) -> None:
        for order, h in zip(orders, request_hashes, strict=True):
            self.put(order)
            self.hashes[order.id] = h

    async def existing(self, order_ids: Iterable[UUID]) -> dict[UUID, tuple[OrderView, str]]:
        return {i: (self.rows[i].view(), self.hashes.get(i, "")) for i in order_ids if i in self.rows}

    async def view(self, order_id: UUID) -> OrderView | None:
        return self.rows[order_id].view() if order_id in self.rows else None

    async def lock(self, order_id: UUID) -> Order | None:
        return self._copy(order_id) if order_id in self.rows else None

    async def lock_pending(self, order_ids: Sequence[UUID], *, due_only: bool) -> list[Order]:
        return [
            self._copy(i)
            for i in sorted(set(order_ids))
            if i in self.rows
            and self.rows[i].status is OrderStatus.PENDING
            and (not due_only or (self.rows[i].expires_at or NOW) <= NOW)
        ]

    async def lock_overdue(self, limit: int) -> list[Order]:
        due = [o.id for o in self.rows.values() if o.status is OrderStatus.PENDING and (o.expires_at or NOW) <= NOW]
        return await self.lock_pending(due[:limit], due_only=True)

    async def lock_for_event(self, event_id: UUID, statuses: Sequence[OrderStatus], limit: int) -> list[Order]:
        ids = sorted(o.id for o in self.rows.values() if o.event_id == event_id and o.status in statuses)
        return [self._copy(i) for i in ids[:limit]]

    async def count_for_event(self, event_id: UUID) -> dict[OrderStatus, int]:
        counts: dict[OrderStatus, int] = {}
        for o in self.rows.values():
            if o.event_id == event_id:
                counts[o.status] = counts.get(o.status, 0) + 1
        return counts

    async def save(self, orders: Sequence[Order]) -> None:
        for order in orders:
            stored = self.rows[order.id]
            if stored.status is not order.loaded_status:
                raise RuntimeError("an order changed under its row lock")
            stored.status = order.status
            order.loaded_status = order.status


class FakeStock:
    def __init__(self) -> None:
        self.levels: dict[UUID, StockLevel] = {}
        self.held_by: dict[tuple[str, UUID], int] = {}

    async def lock(self, ticket_type_ids: Iterable[UUID]) -> dict[UUID, StockLevel]:
        return {i: copy.copy(self.levels[i]) for i in ticket_type_ids if i in self.levels}

    async def holdings(self, pairs: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]:
        return {p: self.held_by[p] for p in pairs if p in self.held_by}

    async def apply(self, effect: StockEffect, *, locked: bool = False) -> list[StockChanged]:
        for tt in effect.ticket_type_ids:
            level = self.levels[tt]
            level.held += effect.held.get(tt, 0)
            level.sold += effect.sold.get(tt, 0)
            level.stock_version += 1
            assert level.held >= 0 and level.sold >= 0 and level.held + level.sold <= level.capacity, level
        for key, delta in effect.holdings.items():
            self.held_by[key] = self.held_by.get(key, 0) + delta
            assert self.held_by[key] >= 0
        return [
            StockChanged(
                ticket_type_id=tt,
                event_id=self.levels[tt].event_id,
                capacity=self.levels[tt].capacity,
                held=self.levels[tt].held,
                sold=self.levels[tt].sold,
                stock_version=self.levels[tt].stock_version,
            )
            for tt in effect.ticket_type_ids
        ]


class FakeCatalog:
    def __init__(self) -> None:
        self.events: dict[UUID, CreateEvent] = {}
        self.types: dict[UUID, list[NewTicketType]] = {}

    async def add_event(self, cmd: CreateEvent) -> bool:
        if cmd.event_id in self.events:
            return False
        self.events[cmd.event_id] = cmd
        self.types[cmd.event_id] = list(cmd.ticket_types)
        return True

    async def add_ticket_types(self, event_id: UUID, types: Sequence[NewTicketType]) -> bool:
        if event_id not in self.events:
            return False
        self.types[event_id].extend(types)
        return True

    async def event(self, event_id: UUID) -> EventInfo | None:
        ev = self.events.get(event_id)
        if ev is None:
            return None
        return EventInfo(
            event_id=ev.event_id,
            title=ev.title,
            venue=ev.venue,
            city=ev.city,
            starts_at=ev.starts_at,
            description=ev.description,
            hold_seconds=ev.hold_seconds,
            ticket_types=[
                TicketTypeInfo(
                    ticket_type_id=t.ticket_type_id,
                    name=t.name,
                    price=t.price,
                    capacity=t.capacity,
                    per_user_limit=t.per_user_limit,
                )
                for t in self.types[event_id]
            ],
        )


class FakeSales:
    def __init__(self) -> None:
        self.settlements: dict[UUID, dict[str, Any]] = {}
        self.tickets: dict[UUID, list[IssuedTicket]] = {}
        self.voided: set[str] = set()
        self._codes = itertools.count(1)

    async def settled_by(self, order_id: UUID) -> str | None:
        found = self.settlements.get(order_id)
        return None if found is None else str(found["txn_ref"])

    async def record(self, payment: PaymentSucceeded, order: Order, late: bool) -> None:
        assert order.id not in self.settlements  # one settlement per order (a primary key in SQL)
        self.settlements[order.id] = {"txn_ref": payment.txn_ref, "late": late, "outcome": order.status}

    async def mark(self, order_id: UUID, outcome: OrderStatus) -> None:
        self.settlements[order_id]["outcome"] = outcome

    async def refund_requested(self, order_ids: Sequence[UUID], cause: RefundCause, actor: str | None = None) -> None:
        for order_id in order_ids:
            self.settlements[order_id].update(outcome=OrderStatus.REFUND_PENDING, cause=cause, by=actor)
            self.voided.update(t.code for t in self.tickets.get(order_id, []))

    async def refund_cause(self, order_id: UUID) -> RefundCause:
        return self.settlements.get(order_id, {}).get("cause", RefundCause.LATE_PAYMENT)  # type: ignore[no-any-return]

    async def issue_tickets(self, order: Order) -> list[IssuedTicket]:
        issued = [
            IssuedTicket(code=f"code-{next(self._codes)}", ticket_type_id=line.ticket_type_id, ticket_type_name="A")
            for line in order.lines
            for _ in range(line.quantity)
        ]
        self.tickets[order.id] = issued
        return issued

    async def event_facts(self, event_id: UUID) -> Any:
        return type("Facts", (), {"title": "Hòa nhạc", "venue": "Nhà hát Lớn", "city": "Hà Nội", "starts_at": NOW})


class FakeEvents:
    """Events as the cancellation sees them; ``stock`` is the fake stock (an event's ticket types are there)."""

    def __init__(self, stock: FakeStock) -> None:
        self.rows: dict[UUID, Event] = {}
        self.stock = stock
        self.saves = 0

    def put(self, event: Event) -> Event:
        self.rows[event.id] = copy.deepcopy(event)
        return event

    async def lock(self, event_id: UUID) -> Event | None:
        if event_id not in self.rows:
            return None
        event = copy.deepcopy(self.rows[event_id])
        event.loaded_status = event.status
        return event

    async def cancelling(self, idle_seconds: float) -> list[UUID]:
        return sorted(e.id for e in self.rows.values() if e.status.value == "CANCELLING")

    async def ticket_type_ids(self, event_id: UUID) -> list[UUID]:
        return sorted(t for t, level in self.stock.levels.items() if level.event_id == event_id)

    async def save(self, event: Event) -> None:
        stored = self.rows[event.id]
        if stored.status is not event.loaded_status:
            raise RuntimeError("an event changed under its row lock")
        self.rows[event.id] = copy.deepcopy(event)
        event.loaded_status = event.status
        self.saves += 1
        # The hold decision reads the event's status with the stock (a JOIN in SQL).
        for level in self.stock.levels.values():
            if level.event_id == event.id:
                level.event_status = event.status


class FakeDoor:
    """Tickets by code; ``admit`` is the guarded UPDATE (``lose_race``: another scan committed first)."""

    def __init__(self) -> None:
        self.tickets: dict[str, TicketAtDoor] = {}
        self.lose_race = False

    async def presented(self, code: str) -> TicketAtDoor | None:
        return self.tickets.get(code)

    async def admit(self, code: str, actor: str) -> datetime | None:
        if self.lose_race:
            self.tickets[code] = replace(self.tickets[code], admitted_at=NOW)
            return None
        if self.tickets[code].admitted_at is not None:
            return None
        self.tickets[code] = replace(self.tickets[code], admitted_at=NOW)
        return NOW

    async def admitted_at(self, code: str) -> datetime | None:
        return self.tickets[code].admitted_at


class FakeUnitOfWork(AbstractUnitOfWork):
    """What every service's fake unit of work does: nothing emitted is published unless it commits; the
    repositories (set by the subclass) outlive each unit of work, as a database does."""

    def __init__(self) -> None:
        self.published: list[Message] = []
        self.commits = 0
        self._pending: list[Message] = []

    async def __aenter__(self) -> Self:
        self._pending = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pending = []  # not committed: rolled back, nothing published

    def emit(self, events: Iterable[Message], correlation_id: str = "") -> None:
        self._pending.extend(events)

    def send(self, queue: str, message: Message, correlation_id: str = "") -> None:
        self._pending.append(message)

    async def now(self) -> datetime:
        return NOW

    async def commit(self) -> None:
        self.published.extend(self._pending)
        self._pending = []
        self.commits += 1


class FakeInventoryUnitOfWork(FakeUnitOfWork):
    """Inventory's repositories, shared between units of work; records what each commit published."""

    def __init__(self) -> None:
        super().__init__()
        self.orders, self.stock = FakeOrders(), FakeStock()
        self.catalog, self.sales = FakeCatalog(), FakeSales()
        self.events = FakeEvents(self.stock)
        self.door = FakeDoor()

    def __call__(self) -> FakeInventoryUnitOfWork:
        return self  # the factory the handlers' wiring takes
