"""The ops process: the DLQ keeper, the dead-letter commands (replay, purge: from the gateway's admin API and
the console), health and metrics. `ticketing dlq` runs the same operations in its own process."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from services.ops import handlers
from services.ops.keeper import Keeper
from shared import health, logs, runtime, topology
from shared.db import make_engine
from shared.messages import DlqAction
from shared.messaging import Bus, Delivery, Route
from shared.settings import Settings, get_settings

log = logs.get_logger(__name__)


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    logs.configure("ops", settings.log_level, settings.log_json)
    engine = make_engine(settings.database_url, pool_size=4)
    keeper = Keeper(settings, engine)
    bus = Bus(settings, "ops")

    async def on_dlq_action(cmd: DlqAction, delivery: Delivery) -> None:
        await bus.reply(delivery, await handlers.dlq_action(cmd, engine, bus, settings.dlq_replay_rate))

    bus.consume(topology.OPS_COMMANDS, {topology.DLQ_ACTION: Route(DlqAction, on_dlq_action)})

    async def broker_check() -> None:
        if keeper.connection is None or keeper.connection.is_closed or not keeper.queues:
            raise ConnectionError(f"waiting for RabbitMQ: {keeper.last_error or 'connecting'}")
        await runtime.broker_check(bus)()

    async def table_check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM ops.dead_letters LIMIT 1"))

    server = await health.serve_service_health(
        "ops",
        settings.service_host,
        settings.ops_port,
        {
            "database": runtime.database_check(engine),
            "rabbitmq": broker_check,
            "ops_schema": table_check,
        },
    )
    if not await keeper.start(stop) or not await bus.start(declare_services=("ops",), stop=stop):
        await runtime.stop_unstarted(server, engine)
        return
    reporter = asyncio.create_task(keeper.report_depths(15.0), name="dlq-depths")
    await stop.wait()
    log.info("ops_stopping")
    reporter.cancel()
    await bus.stop()
    await keeper.stop()
    if server:
        server.should_exit = True
    await engine.dispose()
