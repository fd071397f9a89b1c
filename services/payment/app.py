"""Payment service wiring: consumers, the outbox relay, reconciliation and refund jobs, health."""

from __future__ import annotations

import asyncio

from services.payment.handlers import Payments
from services.payment.ops import PaymentOps
from shared import logs, runtime, topology
from shared.db import make_engine
from shared.messages import OrderHeld, OrderRefundPending, OrdersHeld, PaymentNotified, PaymentOp
from shared.messaging import Bus, Route
from shared.outbox import OutboxRelay
from shared.payments import providers
from shared.settings import Settings, get_settings

log = logs.get_logger(__name__)


def build(settings: Settings) -> Payments:
    engine = make_engine(settings.database_url, pool_size=5)
    bus = Bus(settings, "payment")
    relay = OutboxRelay(engine, "payment", bus, settings.outbox_poll_seconds)
    provider = providers.from_settings(settings)
    payments = Payments(engine, bus, relay, {provider.name: provider}, settings)
    bus.consume(
        topology.PAYMENT_NOTIFICATIONS,
        {
            topology.PAYMENT_NOTIFIED: Route(PaymentNotified, payments.on_payment_notified),
        },
    )
    bus.consume(
        topology.PAYMENT_ORDERS,
        {
            topology.ORDERS_HELD: Route(OrdersHeld, payments.on_orders_held),
            topology.ORDER_HELD: Route(OrderHeld, payments.on_order_held),
            topology.ORDER_REFUND_PENDING: Route(OrderRefundPending, payments.on_refund_pending),
        },
    )
    bus.consume(
        topology.PAYMENT_COMMANDS,
        {
            topology.PAYMENT_OP: Route(PaymentOp, PaymentOps(payments).on_payment_op),
        },
    )
    return payments


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    logs.configure("payment", settings.log_level, settings.log_json)
    payments = build(settings)
    started, server = await runtime.start_consumer_service("payment", settings, payments.engine, payments.bus, stop)
    if not started:
        return
    payments.attempts.start()
    tasks = [
        asyncio.create_task(payments.relay.run(), name="outbox-relay"),
        asyncio.create_task(
            runtime.every(settings.payment_reconcile_interval_seconds, payments.reconcile_once, "reconcile"),
            name="reconcile",
        ),
        asyncio.create_task(
            runtime.every(settings.payment_refund_retry_seconds, payments.refund_due, "refunds"), name="refunds"
        ),
    ]
    log.info("payment_started", prefix=settings.prefix)
    await stop.wait()
    log.info("payment_stopping")
    await runtime.stop_outbox_service(
        bus=payments.bus,
        relay=payments.relay,
        engine=payments.engine,
        tasks=tasks,
        server=server,
        after_consumers=payments.attempts.stop,
    )
