"""The sold-out gate: the gateway answers 409 at once for a ticket type inventory said has nothing left.

Inventory names, in each checkout reply, the ticket types its batch left with nothing available; the gateway
then refuses checkouts of those types itself, without a round trip, until stock comes back: a `stock.changed`
message with something available opens the gate at once (each gateway process listens on an exclusive queue),
and every mark also expires after ``TICKETING_SOLD_OUT_GATE_SECONDS`` in case that message is missed or
overtaken. The gate can only ever reject, never admit: every hold is still decided by inventory under the
row lock, so it cannot oversell. Its cost is a released ticket seen at most that many seconds late.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable
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
        self._until: dict[UUID, float] = {}

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

    def close(self, ticket_type_ids: Iterable[UUID]) -> None:
        if self.seconds <= 0:
            return
        until = time.monotonic() + self.seconds
        for tt in ticket_type_ids:
            self._until[tt] = until

    def on_stock_changed(self, change: StockChanged) -> None:
        if change.capacity - change.held - change.sold > 0:
            self._until.pop(change.ticket_type_id, None)

    def closed_for(self, ticket_type_ids: Iterable[UUID]) -> UUID | None:
        """A ticket type of these that is sold out as far as the gate knows, or None."""
        if not self._until:
            return None
        now = time.monotonic()
        for tt in ticket_type_ids:
            until = self._until.get(tt)
            if until is not None:
                if until > now:
                    GATED.inc()
                    return tt
                del self._until[tt]
        return None
