"""The ops process: the DLQ keeper, the dead-letter commands (replay, purge: from the gateway's admin API and
the console), the background job runner (long replays), health and metrics. `ticketing dlq` runs the same
operations in its own process."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from services.ops import handlers
from services.ops.jobs import JobRunner
from services.ops.keeper import Keeper
from shared import logs, runtime, topology
from shared.db import make_engine
from shared.messages import DlqAction, StartJob
from shared.messaging import Bus, Delivery, Route
from shared.settings import Settings, get_settings
from ticketing import doctor

log = logs.get_logger(__name__)

BUDGET_CHECK_SECONDS = 300.0  # rabbitmqctl costs the machine about a second of CPU


class BrokerBudget:
    """The broker's file-descriptor budget, as `ticketing doctor` reads it, checked every five minutes so that the ops
    service's /readyz warns (without becoming unready) long before the broker would wedge."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.latest: list[str] = []

    def warnings(self) -> list[str]:
        return self.latest

    async def check(self) -> int:
        figures = await asyncio.to_thread(doctor.broker_figures, self.settings, 10.0)
        self.latest = doctor.broker_warnings(figures)
        for warning in self.latest:
            log.warning("broker_budget", warning=warning)
        return len(self.latest)


async def main(stop: asyncio.Event, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    logs.configure("ops", settings.log_level, settings.log_json)
    engine = make_engine(settings.database_url, pool_size=4)
    keeper = Keeper(settings, engine)
    bus = Bus(settings, "ops")

    async def on_dlq_action(cmd: DlqAction, delivery: Delivery) -> None:
        await bus.reply(delivery, await handlers.dlq_action(cmd, engine, bus, settings.dlq_replay_rate))

    runner = JobRunner(engine, handlers.bus_publisher(bus), settings.dlq_replay_rate, settings.ops_job_lease_seconds)

    async def on_start_job(cmd: StartJob, delivery: Delivery) -> None:
        await bus.reply(delivery, await handlers.start_job(cmd, engine, runner))

    bus.consume(
        topology.OPS_COMMANDS,
        {topology.DLQ_ACTION: Route(DlqAction, on_dlq_action), topology.START_JOB: Route(StartJob, on_start_job)},
    )

    async def broker_check() -> None:
        if keeper.connection is None or keeper.connection.is_closed or not keeper.queues:
            raise ConnectionError(f"waiting for RabbitMQ: {keeper.last_error or 'connecting'}")
        await runtime.broker_check(bus)()

    async def table_check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM ops.dead_letters LIMIT 1"))

    budget = BrokerBudget(settings)
    started, server = await runtime.start_consumer_service(
        "ops",
        settings,
        engine,
        bus,
        stop,
        checks={"rabbitmq": broker_check, "ops_schema": table_check},
        warnings=budget.warnings,
        before_bus=lambda: keeper.start(stop),  # the dead-letter keeper's own connection first
    )
    if not started:
        return
    reporter = asyncio.create_task(keeper.report_depths(15.0), name="dlq-depths")
    job_runner = asyncio.create_task(runner.run(stop), name="jobs")
    watcher = asyncio.create_task(
        runtime.every(BUDGET_CHECK_SECONDS, budget.check, "broker-budget"), name="broker-budget"
    )
    await stop.wait()
    log.info("ops_stopping")
    reporter.cancel()
    watcher.cancel()
    await job_runner  # it leaves a job it was running to the next runner (RUNNING, no lease)
    await bus.stop()
    await keeper.stop()
    if server:
        server.should_exit = True
    await engine.dispose()
