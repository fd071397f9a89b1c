"""Inventory's unit of work: one transaction on the ``inventory`` schema, its repositories and its outbox.

The handlers depend on ``AbstractInventoryUnitOfWork``, the protocol of what they use (the repositories'
protocols below, each the part of ``store.py``/``sales_store.py``/``door_store.py`` a handler calls), so the
real ``InventoryUnitOfWork`` and the unit tests' in-memory fake (``tests/unit/fakes.py``) both fit them, as in
the cosmicpython book. mypy checks the real one wherever ``app.py`` wires it in, the fake wherever a test passes
it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from services.inventory.domain import Event, Order, StockEffect, StockLevel, TicketAtDoor
from services.inventory.door_store import Door
from services.inventory.sales_store import Sales
from services.inventory.store import Catalog, Events, Orders, Stock
from shared.messages import (
    CreateEvent,
    EventInfo,
    IssuedTicket,
    NewTicketType,
    OrderStatus,
    OrderView,
    RefundCause,
    StockChanged,
)
from shared.uow import AbstractUnitOfWork, UnitOfWork


class OrderRepository(Protocol):
    async def add(self, orders: Sequence[Order], request_hashes: Sequence[str]) -> None: ...
    async def existing(self, order_ids: Iterable[UUID]) -> dict[UUID, tuple[OrderView, str]]: ...
    async def view(self, order_id: UUID) -> OrderView | None: ...
    async def lock(self, order_id: UUID) -> Order | None: ...
    async def lock_pending(self, order_ids: Sequence[UUID], *, due_only: bool) -> list[Order]: ...
    async def lock_overdue(self, limit: int) -> list[Order]: ...
    async def lock_for_event(self, event_id: UUID, statuses: Sequence[OrderStatus], limit: int) -> list[Order]: ...
    async def count_for_event(self, event_id: UUID) -> dict[OrderStatus, int]: ...
    async def save(self, orders: Sequence[Order]) -> None: ...


class StockRepository(Protocol):
    async def lock(self, ticket_type_ids: Iterable[UUID]) -> dict[UUID, StockLevel]: ...
    async def holdings(self, pairs: Iterable[tuple[str, UUID]]) -> dict[tuple[str, UUID], int]: ...
    async def apply(self, effect: StockEffect, *, locked: bool = False) -> list[StockChanged]: ...


class CatalogRepository(Protocol):
    async def add_event(self, cmd: CreateEvent) -> bool: ...
    async def add_ticket_types(self, event_id: UUID, types: Sequence[NewTicketType]) -> bool: ...
    async def event(self, event_id: UUID) -> EventInfo | None: ...


class SalesRepository(Protocol):
    async def settled_by(self, order_id: UUID) -> str | None: ...
    async def record(
        self,
        order_id: UUID,
        provider: str,
        txn_ref: str,
        amount: int,
        late: bool,
        outcome: OrderStatus,
        paid_at: datetime,
    ) -> None: ...
    async def mark(self, order_id: UUID, outcome: OrderStatus) -> None: ...
    async def refund_requested(
        self, order_ids: Sequence[UUID], cause: RefundCause, actor: str | None = None
    ) -> None: ...
    async def refund_cause(self, order_id: UUID) -> RefundCause: ...
    async def issue_tickets(self, order: Order) -> list[IssuedTicket]: ...
    async def event_facts(self, event_id: UUID) -> Any: ...


class DoorRepository(Protocol):
    async def presented(self, code: str) -> TicketAtDoor | None: ...
    async def admit(self, code: str, actor: str) -> datetime | None: ...
    async def admitted_at(self, code: str) -> datetime | None: ...


class EventRepository(Protocol):
    async def lock(self, event_id: UUID) -> Event | None: ...
    async def cancelling(self, idle_seconds: float) -> list[UUID]: ...
    async def ticket_type_ids(self, event_id: UUID) -> list[UUID]: ...
    async def save(self, event: Event) -> None: ...


class AbstractInventoryUnitOfWork(AbstractUnitOfWork, Protocol):
    """What inventory's handlers use: a unit of work and its repositories (read-only members, so a unit of work
    whose repositories are concrete classes, or fakes, still fits)."""

    @property
    def orders(self) -> OrderRepository: ...
    @property
    def stock(self) -> StockRepository: ...
    @property
    def catalog(self) -> CatalogRepository: ...
    @property
    def sales(self) -> SalesRepository: ...
    @property
    def door(self) -> DoorRepository: ...
    @property
    def events(self) -> EventRepository: ...


class InventoryUnitOfWork(UnitOfWork):
    orders: Orders
    stock: Stock
    catalog: Catalog
    sales: Sales
    door: Door
    events: Events

    def bind(self, conn: AsyncConnection) -> None:
        self.orders, self.stock = Orders(conn, self.clock), Stock(conn)
        self.catalog, self.sales = Catalog(conn), Sales(conn)
        self.door = Door(conn)
        self.events = Events(conn)
