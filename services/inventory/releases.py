"""Where a hold is released: its expiry (the delay queue's message, or the sweeper's backstop for a lost one)
and the buyer's cancel. Each release is one unit of work over any number of orders: the orders are locked in
id order, each ``Order`` decides its own move, and the stock moves once per ticket type."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from services.inventory import store
from services.inventory.domain import Order, StockEffect
from services.inventory.uow import AbstractInventoryUnitOfWork, InventoryUnitOfWork
from shared import logs, metrics
from shared.batching import GroupCommit
from shared.messages import HoldExpiryDue, OrderStatus
from shared.messaging import Delivery

log = logs.get_logger(__name__)

# An expiry message that arrives up to this early is held back until due (by the database's clock).
MAX_EARLY_WAIT_SECONDS = 5.0

Why = Literal["expire", "cancel"]


async def release(uow: AbstractInventoryUnitOfWork, orders: Sequence[Order], why: Why) -> list[Order]:
    """Release locked PENDING orders inside an open unit of work; emits what changed. Commit is the caller's."""
    effect = StockEffect()
    for order in orders:
        effect.add(order.expire() if why == "expire" else order.cancel())
    await uow.orders.save(orders)
    uow.emit(await uow.stock.apply(effect))
    for order in orders:
        uow.emit(order.events)
    return list(orders)


@dataclass
class Releases:
    new_uow: Callable[[], InventoryUnitOfWork]
    expiries: GroupCommit[uuid.UUID, bool] = field(init=False)

    def __post_init__(self) -> None:
        # Holds placed together expire together: release them in shared transactions too.
        self.expiries = GroupCommit("release-batcher", self._expire_batch, max_batch=256)

    async def on_hold_expiry_due(self, msg: HoldExpiryDue, delivery: Delivery) -> None:
        """The delay queue fires up to a second early (see topology.hold_delay_ttl_ms): wait for the exact
        moment by the database's clock, then release the batch's holds. Already released or paid: nothing."""
        pending = msg.all_order_ids
        for _ in range(3):
            async with self.new_uow() as uow:
                remaining = await store.seconds_until(uow.conn, msg.expires_at)
            if remaining > MAX_EARLY_WAIT_SECONDS:
                return  # far from due (a message from long ago, or a clock jump): the sweeper is the backstop
            if remaining > 0:
                await asyncio.sleep(remaining)
            released = await asyncio.gather(*(self.expiries.submit(order_id) for order_id in pending))
            pending = [order_id for order_id, done in zip(pending, released, strict=True) if not done]
            if pending:  # paid or cancelled meanwhile (nothing to do), or due a hair later than the message says
                async with self.new_uow() as uow:
                    pending = await store.still_pending(uow.conn, pending)
            if not pending:
                return

    async def _expire_batch(self, order_ids: Sequence[uuid.UUID], _: Sequence[str]) -> list[bool]:
        async with self.new_uow() as uow:
            released = await release(uow, await uow.orders.lock_pending(order_ids, due_only=True), "expire")
            now = await uow.now()
            await uow.commit()
        _measure(released, "delay_queue", now)
        ids = {o.id for o in released}
        return [order_id in ids for order_id in order_ids]

    async def sweep_overdue(self, batch: int = 500) -> int:
        """Backstop for lost delay messages: release every overdue hold, oldest first."""
        total = 0
        while True:
            async with self.new_uow() as uow:
                released = await release(uow, await uow.orders.lock_overdue(batch), "expire")
                now = await uow.now()
                await uow.commit()
            _measure(released, "sweeper", now)
            total += len(released)
            if len(released) < batch:
                return total


def _measure(released: Sequence[Order], by: str, now: datetime) -> None:
    for order in released:
        metrics.HOLDS_RELEASED.labels(status=order.status.value, by=by).inc()
        if order.status is OrderStatus.EXPIRED and order.expires_at is not None:
            metrics.RELEASE_LATENESS.observe((now - order.expires_at).total_seconds())
    if released:
        log.info("holds_released", count=len(released), by=by)
