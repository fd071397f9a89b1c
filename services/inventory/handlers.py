"""Inventory's consumers: thin functions from a message to a store call, an outbox write and a reply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory import domain, store
from services.inventory.holds import HoldBatcher
from shared import logs, metrics, outbox, topology
from shared.batching import GroupCommit
from shared.messages import (
    AddTicketType,
    CancelOrder,
    CheckoutRequested,
    CommandResult,
    CreateEvent,
    HoldExpiryDue,
    OrderReleased,
    OrderStatus,
    RejectReason,
)
from shared.messaging import Bus, Delivery
from shared.outbox import OutboxRelay, Outgoing

log = logs.get_logger(__name__)

# An expiry message that arrives up to this early is held back until due (by the database's clock).
MAX_EARLY_WAIT_SECONDS = 5.0


@dataclass
class Inventory:
    engine: AsyncEngine
    bus: Bus
    relay: OutboxRelay
    batcher: HoldBatcher
    expiries: GroupCommit[uuid.UUID, bool] = field(init=False)

    def __post_init__(self) -> None:
        # Holds placed together expire together: release them in shared transactions too.
        self.expiries = GroupCommit("release-batcher", self._expire_batch, max_batch=256)

    def start(self) -> None:
        self.batcher.start()
        self.expiries.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.expiries.stop()

    # --- checkout ---------------------------------------------------------------------------------

    async def on_checkout_requested(self, cmd: CheckoutRequested, delivery: Delivery) -> None:
        outcome = await self.batcher.submit(cmd)
        view = outcome.order
        if not outcome.created and outcome.request_hash != cmd.request_hash:
            result = CommandResult(ok=False, status=422, order=view,
                                   detail="this Idempotency-Key was used with a different request")
        elif view.status is OrderStatus.REJECTED:
            reason = RejectReason(view.reason or RejectReason.INVALID_ORDER)
            result = CommandResult(ok=False, status=domain.http_status(reason), order=view, detail=view.detail)
        else:
            result = CommandResult(ok=True, status=201 if view.status is OrderStatus.PENDING else 200, order=view,
                                   created=outcome.created)
        await self.bus.reply(delivery, result)

    # --- release ----------------------------------------------------------------------------------

    async def on_hold_expiry_due(self, msg: HoldExpiryDue, delivery: Delivery) -> None:
        """The delay queue fires up to a second early (see topology.hold_delay_ttl_ms): wait for the exact
        moment by the database's clock, then release. Already released or paid: nothing to do."""
        for _ in range(3):
            async with self.engine.connect() as conn:
                remaining = await store.seconds_until_expiry(conn, msg.order_id)
            if remaining is None or remaining > MAX_EARLY_WAIT_SECONDS:
                return  # not PENDING any more, or far from due (the sweeper is the backstop)
            if remaining > 0:
                await asyncio.sleep(remaining)
            if await self.expiries.submit(msg.order_id):
                return

    async def on_cancel_order(self, cmd: CancelOrder, delivery: Delivery) -> None:
        async with self.engine.connect() as conn:
            order = await store.get_order(conn, cmd.order_id)
        if order is None or (order.user_id != cmd.user_id and not cmd.is_admin):
            await self.bus.reply(delivery, CommandResult(ok=False, status=404, detail="order not found"))
            return
        released = await self.release([cmd.order_id], OrderStatus.CANCELLED, by="buyer")
        async with self.engine.connect() as conn:
            order = await store.get_order(conn, cmd.order_id)
        if released:
            await self.bus.reply(delivery, CommandResult(ok=True, status=200, order=order))
        else:
            detail = f"order is {order.status.value if order else 'gone'}; only a PENDING order can be cancelled"
            await self.bus.reply(delivery, CommandResult(ok=False, status=409, detail=detail, order=order))

    async def _expire_batch(self, order_ids: Sequence[uuid.UUID], _: Sequence[str]) -> list[bool]:
        released = await self.release(list(order_ids), OrderStatus.EXPIRED, by="delay_queue")
        return [order_id in released for order_id in order_ids]

    async def release(self, order_ids: list[uuid.UUID] | None, status: OrderStatus, by: str,
                      overdue_limit: int = 0) -> set[uuid.UUID]:
        """Release PENDING orders (by id, or the oldest overdue ones) and publish what changed.

        Returns the ids released by this call (an order already released or paid is not among them)."""
        async with self.engine.begin() as conn:
            released, changes = await store.release_orders(
                conn, status, order_ids=order_ids, overdue_limit=overdue_limit
            )
            routing = topology.ORDER_EXPIRED if status is OrderStatus.EXPIRED else topology.ORDER_CANCELLED
            messages = [
                Outgoing.event(
                    routing,
                    OrderReleased(order_id=r.view.order_id, user_id=r.view.user_id, user_email=r.user_email,
                                  locale=r.locale, event_id=r.event_id, status=status, items=r.view.items),
                    f"{status.value.lower()}:{r.view.order_id}",
                )
                for r in released
            ]
            messages += [
                Outgoing.event(topology.STOCK_CHANGED, c, f"stock:{c.ticket_type_id}:{uuid.uuid4().hex}")
                for c in changes
            ]
            await outbox.add(conn, "inventory", messages)
            db_now = await store.now(conn) if released else None
        if released:
            self.relay.wake()
            for r in released:
                metrics.HOLDS_RELEASED.labels(status=status.value, by=by).inc()
                if status is OrderStatus.EXPIRED and r.view.expires_at and db_now:
                    metrics.RELEASE_LATENESS.observe((db_now - r.view.expires_at).total_seconds())
            log.info("holds_released", count=len(released), status=status.value, by=by)
        return {r.view.order_id for r in released}

    async def sweep_overdue(self, batch: int = 500) -> int:
        """Backstop for lost delay messages: release every overdue hold, oldest first."""
        total = 0
        while True:
            n = len(await self.release(None, OrderStatus.EXPIRED, by="sweeper", overdue_limit=batch))
            total += n
            if n < batch:
                return total

    # --- catalog ----------------------------------------------------------------------------------

    async def on_create_event(self, cmd: CreateEvent, delivery: Delivery) -> None:
        async with self.engine.begin() as conn:
            created = await store.insert_event(conn, cmd)
            if created:
                await store.insert_ticket_types(conn, cmd.event_id, cmd.ticket_types)
                info = await store.load_event_info(conn, cmd.event_id)
                assert info is not None
                await outbox.add(conn, "inventory", [
                    Outgoing.event(topology.EVENT_CREATED, info, f"event-created:{cmd.event_id}")
                ])
        self.relay.wake()
        await self.bus.reply(delivery, CommandResult(ok=True, status=201 if created else 200,
                                                     event_id=cmd.event_id))

    async def on_add_ticket_type(self, cmd: AddTicketType, delivery: Delivery) -> None:
        async with self.engine.begin() as conn:
            if not await store.event_exists(conn, cmd.event_id):
                await self.bus.reply(delivery, CommandResult(ok=False, status=404, detail="event not found"))
                return
            await store.insert_ticket_types(conn, cmd.event_id, [cmd.ticket_type])
            info = await store.load_event_info(conn, cmd.event_id)
            assert info is not None
            await outbox.add(conn, "inventory", [
                Outgoing.event(topology.TICKET_TYPE_ADDED, info,
                               f"ticket-type-added:{cmd.ticket_type.ticket_type_id}")
            ])
        self.relay.wake()
        await self.bus.reply(delivery, CommandResult(ok=True, status=201, event_id=cmd.event_id))


