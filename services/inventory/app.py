"""Inventory service wiring: consumers, the hold batcher, the outbox relay, the sweeper, health."""

from __future__ import annotations

import asyncio

from services.inventory.handlers import Inventory
from services.inventory.holds import HoldBatcher
from services.inventory.sales import Sales
from shared import health, logs, runtime, topology
from shared.db import make_engine
from shared.messages import (
    AddTicketType,
    CancelOrder,
    CheckoutRequested,
    CreateEvent,
    HoldExpiryDue,
    PaymentRefunded,
    PaymentSucceeded,
)
from shared.messaging import Bus, Route
from shared.outbox import OutboxRelay
from shared.settings import Settings, get_settings

log = logs.get_logger(__name__)


def build(settings: Settings) -> Inventory:
    engine = make_engine(settings.database_url, pool_size=8)
    bus = Bus(settings, "inventory")
    relay = OutboxRelay(engine, "inventory", bus, settings.outbox_poll_seconds,
                        exit_before_publish=settings.fault_exit_before_publish)
    inventory = Inventory(engine, bus, relay, HoldBatcher(engine, bus, relay, settings))
    bus.consume(topology.INVENTORY_CHECKOUT, {
        topology.CHECKOUT_REQUESTED: Route(CheckoutRequested, inventory.on_checkout_requested),
    })
    bus.consume(topology.INVENTORY_HOLD_EXPIRY, {
        topology.HOLD_EXPIRY_DUE: Route(HoldExpiryDue, inventory.on_hold_expiry_due),
    })
    bus.consume(topology.INVENTORY_COMMANDS, {
        topology.CREATE_EVENT: Route(CreateEvent, inventory.on_create_event),
        topology.ADD_TICKET_TYPE: Route(AddTicketType, inventory.on_add_ticket_type),
        topology.CANCEL_ORDER: Route(CancelOrder, inventory.on_cancel_order),
    })
    sales = Sales(engine, relay)  # payments turn holds into sales (issue 3)
    bus.consume(topology.INVENTORY_PAYMENTS, {
        topology.PAYMENT_SUCCEEDED: Route(PaymentSucceeded, sales.on_payment_succeeded),
        topology.PAYMENT_REFUNDED: Route(PaymentRefunded, sales.on_payment_refunded),
    })
    return inventory


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    logs.configure("inventory", settings.log_level, settings.log_json)
    inventory = build(settings)
    # Health first: /healthz answers and /readyz says why while the broker is away.
    server = await health.serve_service_health("inventory", settings.service_host, settings.inventory_port, {
        "database": runtime.database_check(inventory.engine),
        "rabbitmq": runtime.broker_check(inventory.bus),
    })
    if not await inventory.bus.start(declare_services=("inventory",), stop=stop):
        await runtime.stop_unstarted(server, inventory.engine)
        return
    inventory.start()
    tasks = [
        asyncio.create_task(inventory.relay.run(), name="outbox-relay"),
        asyncio.create_task(runtime.every(settings.sweeper_interval_seconds, inventory.sweep_overdue, "sweeper"),
                            name="sweeper"),
    ]
    log.info("inventory_started", prefix=settings.prefix)
    await stop.wait()
    log.info("inventory_stopping")
    # Stopping the consumers waits for in-flight handlers, which wait for their batch: stop the batchers after.
    await runtime.stop_outbox_service(bus=inventory.bus, relay=inventory.relay, engine=inventory.engine,
                                      tasks=tasks, server=server, after_consumers=inventory.stop)
