"""A unit of work: one transaction of one service, with the messages it emits (the cosmicpython pattern,
adapted to the transactional outbox).

``async with uow:`` opens the transaction; repositories bound to it load and lock aggregates; handlers call
domain methods and ``uow.emit(...)`` what they return; ``await uow.commit()`` writes the emitted messages to the
service's outbox in the same transaction (envelope from ``shared.envelopes``), commits, and wakes the relay.
Leaving the block without a commit rolls everything back, messages included. A group-commit batch is one unit
of work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import envelopes, outbox
from shared.messages import Message
from shared.outbox import OutboxRelay, Outgoing

_NOW = "SELECT now()"


@dataclass
class Clock:
    """The transaction's ``now()``, once read. PostgreSQL's ``now()`` is the start of the transaction, the same
    for every statement in it, so a repository may read it along with its first statement (inventory's
    ``Orders.existing``) and spare the unit of work the round trip of ``SELECT now()``."""

    value: datetime | None = None


class AbstractUnitOfWork(Protocol):
    """What a handler may do with any unit of work (``UnitOfWork`` below, or a test's fake): open it, emit and
    send messages, read the transaction's clock, commit. A service's protocol adds its repositories."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def emit(self, events: Iterable[Message], correlation_id: str = "") -> None: ...

    def send(self, queue: str, message: Message, correlation_id: str = "") -> None: ...

    async def now(self) -> datetime: ...

    async def commit(self) -> None: ...


class UnitOfWork:
    def __init__(self, engine: AsyncEngine, schema: str, relay: OutboxRelay | None = None) -> None:
        self.engine = engine
        self.schema = schema  # the owning service's schema: its outbox table is ``{schema}.outbox``
        self.relay = relay
        self._conn: AsyncConnection | None = None
        self._outgoing: list[Outgoing] = []
        self._committed = False
        self.clock = Clock()

    async def __aenter__(self) -> Self:
        self._conn = await self.engine.connect()
        await self._conn.begin()
        self._outgoing, self._committed = [], False
        self.clock.value = None
        self.bind(self._conn)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not self._committed:
                await conn.rollback()
        finally:
            await conn.close()

    def bind(self, conn: AsyncConnection) -> None:
        """Bind the service's repositories to the transaction (override in each service)."""

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("the unit of work is not open: use `async with uow:`")
        return self._conn

    def emit(self, events: Iterable[Message], correlation_id: str = "") -> None:
        """Publish these events if, and only if, this unit of work commits."""
        for event in events:
            self._outgoing.append(
                Outgoing.event(envelopes.routing_key(event), event, envelopes.message_id(event), correlation_id)
            )

    def send(self, queue: str, message: Message, correlation_id: str = "") -> None:
        """Put a message straight on a queue (a delay queue) on commit."""
        self._outgoing.append(Outgoing.to_queue(queue, message, envelopes.message_id(message), correlation_id))

    async def now(self) -> datetime:
        """The transaction's clock: one clock for every service, the database's."""
        if self.clock.value is None:
            self.clock.value = (await self.conn.exec_driver_sql(_NOW)).scalar_one()
        return self.clock.value

    async def commit(self) -> None:
        await outbox.add(self.conn, self.schema, self._outgoing)
        await self.conn.commit()
        self._committed = True
        self.clock.value = None
        if self._outgoing and self.relay is not None:
            self.relay.wake()
        self._outgoing = []
