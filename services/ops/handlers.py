"""The ops service's command handlers: dead-letter replays and purges, the only writes to its dead letters
besides the keeper's, and background jobs (long replays). The gateway's admin API (and the console) send them
here as ``DlqAction`` and ``StartJob`` commands."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ops import dlq, jobs
from shared import dead_letters
from shared.messages import DlqAction, DlqActionAnswered, DlqActionKind, DlqActionOutcome, JobAccepted, StartJob
from shared.messaging import Bus


def bus_publisher(bus: Bus) -> dlq.Publish:
    """A replay's publish: to the default exchange (the original queue by name), with a confirm."""

    async def publish(
        data: bytes, queue: str, message_id: str, headers: dict[str, Any], correlation_id: str | None
    ) -> None:
        await bus.publish_raw(
            data, queue, exchange="", message_id=message_id, headers=headers, correlation_id=correlation_id
        )

    return publish


async def start_job(cmd: StartJob, engine: AsyncEngine, runner: jobs.JobRunner) -> JobAccepted:
    answered = await jobs.submit(engine, cmd)
    runner.wake.set()
    return answered


async def dlq_action(cmd: DlqAction, engine: AsyncEngine, bus: Bus, default_rate: float) -> DlqActionAnswered:
    if cmd.service not in dead_letters.dlq_services():
        return DlqActionAnswered(
            outcome=DlqActionOutcome.UNKNOWN_SERVICE, detail=f"no dead-letter queue for service {cmd.service!r}"
        )
    try:
        sel = dead_letters.Selector(ids=tuple(cmd.ids), group=cmd.group, everything=cmd.everything)
    except ValueError as exc:
        return DlqActionAnswered(outcome=DlqActionOutcome.UNKNOWN_SERVICE, detail=str(exc))
    if cmd.action is DlqActionKind.PURGE:
        result = await dlq.purge(engine, cmd.service, sel, cmd.actor, dry_run=cmd.dry_run)
        return DlqActionAnswered(outcome=DlqActionOutcome.DONE, result=result.__dict__)

    try:
        result = await dlq.replay(
            engine,
            bus_publisher(bus),
            cmd.service,
            sel,
            cmd.actor,
            dry_run=cmd.dry_run,
            rate=default_rate if cmd.rate is None else cmd.rate,
        )
    except dlq.ReplayInProgress as exc:
        return DlqActionAnswered(outcome=DlqActionOutcome.BUSY, detail=str(exc))
    outcome = DlqActionOutcome.INTERRUPTED if result.error else DlqActionOutcome.DONE
    return DlqActionAnswered(outcome=outcome, detail=result.error or "", result=result.__dict__)
