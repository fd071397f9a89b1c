"""Mailer service wiring: its work queue (retry ladder from settings), consumers, the dev SMTP sink, health."""

from __future__ import annotations

import asyncio

import aio_pika

from services.mailer.handlers import Mailer
from services.mailer.sender import SmtpConfig, SmtpSender
from services.mailer.sink import start_sink
from services.mailer.store import EmailStore
from shared import logs, runtime, topology
from shared.db import make_engine
from shared.messages import OrderCancelled, OrderExpired, OrderPaid, OrderRefunded, ResendEmail
from shared.messaging import Bus, Declare, Route
from shared.settings import Settings, get_settings

log = logs.get_logger(__name__)


def work_queue(settings: Settings) -> topology.WorkQueue:
    return topology.mailer_notifications(tuple(settings.mailer_retry_delays))


def declare(settings: Settings, wq: topology.WorkQueue) -> Declare:
    """Declare the mailer's queues with the configured ladder (Bus.start would use the default one)."""

    async def _declare(channel: aio_pika.abc.AbstractChannel) -> None:
        await topology.declare_service(
            channel,
            topology.Names(settings.prefix),
            "mailer",
            settings.delivery_limit,
            queues=(wq,),
            max_length=settings.work_queue_max_length,
        )

    return _declare


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    logs.configure("mailer", settings.log_level, settings.log_json)
    sink = None
    if settings.smtp_host:
        config = SmtpConfig.from_settings(settings)
    else:
        sink = start_sink(settings)
        config = SmtpConfig.from_settings(settings, host="127.0.0.1", port=settings.mail_sink_port)
    engine = make_engine(settings.database_url, pool_size=4)
    # SMTP is slow next to a database write: bound the sends in flight per process.
    bus = Bus(settings.model_copy(update={"prefetch": settings.mailer_prefetch}), "mailer")
    mailer = Mailer(EmailStore(engine, settings.mailer_claim_lease_seconds), SmtpSender(config), engine)
    wq = work_queue(settings)
    bus.consume(
        wq,
        {
            topology.ORDER_PAID: Route(OrderPaid, mailer.on_order_paid),
            topology.ORDER_EXPIRED: Route(OrderExpired, mailer.on_order_expired),
            topology.ORDER_REFUNDED: Route(OrderRefunded, mailer.on_order_refunded),
            topology.RESEND_EMAIL: Route(ResendEmail, mailer.on_resend),
            topology.ORDER_CANCELLED: Route(OrderCancelled, mailer.on_order_cancelled),
        },
    )
    started, server = await runtime.start_consumer_service(
        "mailer", settings, engine, bus, stop, declare=declare(settings, wq)
    )
    if not started:
        if sink is not None:
            sink.stop()
        return
    log.info(
        "mailer_started",
        prefix=settings.prefix,
        smtp=f"{config.host}:{config.port}",
        retry_delays=list(wq.retry_delays),
    )
    await stop.wait()
    log.info("mailer_stopping")
    await bus.stop()  # waits for in-flight sends
    if server:
        server.should_exit = True
    if sink is not None:
        sink.stop()
    await engine.dispose()
