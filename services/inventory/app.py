"""Inventory service wiring: consumers, the hold batcher, the outbox relay, the sweeper, health."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory import handlers, organiser, sales
from services.inventory.holds import HoldBatcher
from services.inventory.releases import Releases
from services.inventory.uow import InventoryUnitOfWork
from shared import logs, runtime, topology
from shared.db import make_engine
from shared.handling import answering, handling
from shared.messages import (
    AddTicketType,
    CancelEvent,
    CancelOrder,
    CheckIn,
    CheckoutBatch,
    CheckoutRequested,
    ContinueEventCancellation,
    CreateEvent,
    HoldExpiryDue,
    PaymentRefunded,
    PaymentSucceeded,
    RefundOrder,
)
from shared.messaging import Bus, Route
from shared.outbox import OutboxRelay
from shared.settings import Settings, get_settings

log = logs.get_logger(__name__)


@dataclass
class Inventory:
    engine: AsyncEngine
    bus: Bus
    relay: OutboxRelay
    holds: HoldBatcher
    releases: Releases
    settings: Settings

    def new_uow(self) -> InventoryUnitOfWork:
        return InventoryUnitOfWork(self.engine, "inventory", self.relay)

    async def sweep(self) -> None:
        """The periodic backstops: overdue holds, and cancellations whose continue message went missing."""
        await self.releases.sweep_overdue()
        await organiser.resume(self.new_uow(), self.settings.event_cancel_resume_idle_seconds)

    def start(self) -> None:
        self.holds.start()
        self.releases.expiries.start()

    async def stop(self) -> None:
        await self.holds.stop()
        await self.releases.expiries.stop()


def build(settings: Settings) -> Inventory:
    engine = make_engine(settings.database_url, pool_size=8)
    bus = Bus(settings, "inventory")
    relay = OutboxRelay(
        engine, "inventory", bus, settings.outbox_poll_seconds, exit_before_publish=settings.fault_exit_before_publish
    )

    def new_uow() -> InventoryUnitOfWork:
        return InventoryUnitOfWork(engine, "inventory", relay)

    inventory = Inventory(engine, bus, relay, HoldBatcher(new_uow, bus, settings), Releases(new_uow), settings)
    next_batch = functools.partial(
        organiser.continue_event_cancellation,
        batch_size=settings.event_cancel_batch_size,
        pause=settings.event_cancel_pause_seconds,
    )
    bus.consume(
        topology.INVENTORY_CHECKOUT,
        {
            topology.CHECKOUT_BATCH: Route(CheckoutBatch, inventory.holds.on_checkout_batch),
            # One checkout per message: what gateways before checkout.batch sent (and may have left queued).
            topology.CHECKOUT_REQUESTED: Route(CheckoutRequested, inventory.holds.on_checkout_requested),
        },
        direct=True,  # the hottest queue: no FastStream subscriber layers (shared/direct.py)
    )
    bus.consume(
        topology.INVENTORY_HOLD_EXPIRY,
        {
            topology.HOLD_EXPIRY_DUE: Route(HoldExpiryDue, inventory.releases.on_hold_expiry_due),
        },
    )
    bus.consume(
        topology.INVENTORY_COMMANDS,
        {
            topology.CREATE_EVENT: Route(CreateEvent, answering(handlers.create_event, new_uow, bus)),
            topology.ADD_TICKET_TYPE: Route(AddTicketType, answering(handlers.add_ticket_type, new_uow, bus)),
            topology.CANCEL_ORDER: Route(CancelOrder, answering(handlers.cancel_order, new_uow, bus)),
            topology.CHECK_IN: Route(CheckIn, answering(handlers.check_in, new_uow, bus)),
            topology.REFUND_ORDER: Route(RefundOrder, answering(organiser.refund_order, new_uow, bus)),
            topology.CANCEL_EVENT: Route(CancelEvent, answering(organiser.cancel_event, new_uow, bus)),
            topology.CONTINUE_EVENT_CANCELLATION: Route(ContinueEventCancellation, handling(next_batch, new_uow)),
        },
    )
    bus.consume(
        topology.INVENTORY_PAYMENTS,
        {
            topology.PAYMENT_SUCCEEDED: Route(PaymentSucceeded, handling(sales.payment_succeeded, new_uow)),
            topology.PAYMENT_REFUNDED: Route(PaymentRefunded, handling(sales.payment_refunded, new_uow)),
        },
    )
    return inventory


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    logs.configure("inventory", settings.log_level, settings.log_json)
    inventory = build(settings)
    started, server = await runtime.start_consumer_service("inventory", settings, inventory.engine, inventory.bus, stop)
    if not started:
        return
    inventory.start()
    # A cancellation that was under way when this process (or another) died goes on from its durable progress.
    try:
        await organiser.resume(inventory.new_uow())
    except Exception as exc:  # the sweeper's timer resumes it later
        log.warning("event_cancel_resume_failed", error=repr(exc))
    tasks = [
        asyncio.create_task(inventory.relay.run(), name="outbox-relay"),
        asyncio.create_task(
            runtime.every(settings.sweeper_interval_seconds, inventory.sweep, "sweeper"),
            name="sweeper",
        ),
    ]
    log.info("inventory_started", prefix=settings.prefix)
    await stop.wait()
    log.info("inventory_stopping")
    # Stopping the consumers waits for in-flight handlers, which wait for their batch: stop the batchers after.
    await runtime.stop_outbox_service(
        bus=inventory.bus,
        relay=inventory.relay,
        engine=inventory.engine,
        tasks=tasks,
        server=server,
        after_consumers=inventory.stop,
    )
