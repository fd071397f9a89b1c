"""The sold-out gate: the gateway answers 409 at once for a ticket type inventory said has nothing left.

Inventory names, in each checkout reply, the ticket types its batch left with nothing available; the gateway
then refuses checkouts of those types itself, without a round trip, until stock comes back: a `stock.changed`
message with something available opens the gate at once (each gateway process listens on an exclusive queue),
and every mark also expires after ``TICKETING_SOLD_OUT_GATE_SECONDS`` in case that message is missed or
overtaken. The gate can only ever reject, never admit: every hold is still decided by inventory under the
row lock, so it cannot oversell. Its cost is a released ticket seen at most that many seconds late.

Two details keep a closed gate from letting a crowd through at once (each would be a stampede of checkouts
into inventory, only to be refused there, and the tail of a rush's latency):

- When a mark expires, the next checkout of that type goes to inventory as the **probe** and the others are
  still refused (for another mark's length at most) until its answer closes the gate again or opens it: the
  half-open state of a circuit breaker.
- A ``stock.changed`` opens the gate only if it is newer than the answer that closed it. Inventory publishes it
  through its outbox after the commit, while the checkout's answer comes straight back, so the message of the
  batch *before* the sold-out one routinely arrives after it. Both carry the ticket type's stock version
  (``inventory.ticket_types.stock_version``, moved by every change of its counters under the row lock): a
  message whose version is not above the one the gate closed at is older than the close, and is ignored.
  Where either version is not known (0: a message of an older inventory), the message opens the gate, which
  is always safe: the gate only saves inventory work.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from faststream import AckPolicy
from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue
from prometheus_client import Counter
from pydantic import ValidationError

from shared import topology
from shared.messages import StockChanged
from shared.messaging import Bus, raw_message

GATED = Counter("ticketing_checkout_gated_total", "Checkouts refused by the gateway's sold-out gate")


class SoldOutGate:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[UUID, float] = {}  # closed until then (monotonic clock)
        self._closed_at: dict[UUID, int] = {}  # the stock version inventory last said it ran out at (0: unknown)

    def listen(self, bus: Bus) -> None:
        """Subscribe this process to stock changes (an exclusive queue of its own; before the bus starts)."""
        queue = RabbitQueue(
            bus.names.queue(f"gateway.stock.{uuid.uuid4().hex[:16]}"),
            durable=False,
            exclusive=True,
            auto_delete=True,
            routing_key=topology.STOCK_CHANGED,
        )
        exchange = RabbitExchange(bus.names.events_exchange, type=ExchangeType.TOPIC, durable=True)

        @bus.broker.subscriber(queue, exchange, ack_policy=AckPolicy.ACK_FIRST, no_reply=True, decoder=raw_message)
        async def _on_stock_changed(raw: Any) -> None:
            # A malformed one is not ours to dead-letter: the search service consumes the same messages durably.
            with contextlib.suppress(ValidationError):
                self.on_stock_changed(StockChanged.model_validate_json(raw.body))

    def close(self, sold_out: Mapping[UUID, int]) -> None:
        """Close the gate for these ticket types; each maps to the stock version it ran out at (0: unknown)."""
        if self.seconds <= 0:
            return
        until = time.monotonic() + self.seconds
        for tt, version in sold_out.items():
            self._until[tt] = until
            self._closed_at[tt] = version

    def answered(self, requested: Iterable[UUID], sold_out: Mapping[UUID, int]) -> None:
        """Inventory's answer to a checkout of ``requested``: the types its batch left empty close the gate (at
        their stock versions), the others (it had stock of them) open it."""
        self.close(sold_out)
        for tt in requested:
            if tt not in sold_out:
                self._open(tt)

    def on_stock_changed(self, change: StockChanged) -> None:
        if change.capacity - change.held - change.sold <= 0:
            return
        closed_at = self._closed_at.get(change.ticket_type_id)
        if closed_at and change.stock_version and change.stock_version <= closed_at:
            return  # published before the answer that closed the gate (module docstring)
        self._open(change.ticket_type_id)

    def _open(self, tt: UUID) -> None:
        self._until.pop(tt, None)
        self._closed_at.pop(tt, None)

    def closed_for(self, ticket_type_ids: Iterable[UUID]) -> UUID | None:
        """A ticket type of these that is sold out as far as the gate knows, or None. A type whose mark is
        over lets this one checkout through as its probe and stays closed for the others meanwhile."""
        if not self._until:
            return None
        now = time.monotonic()
        expired: list[UUID] = []
        for tt in ticket_type_ids:
            until = self._until.get(tt)
            if until is not None:
                if until > now:
                    GATED.inc()
                    return tt
                expired.append(tt)
        for tt in expired:  # the probe: its answer closes the gate again or opens it (answered)
            self._until[tt] = now + self.seconds
        return None
