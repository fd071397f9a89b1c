"""Background jobs of the ops service: a long dead-letter replay (thousands of letters at a paced rate) runs here
in chunks, not inside one HTTP request or one command delivery.

A ``StartJob`` command records the job (QUEUED) and is answered at once; the runner claims it with a lease,
marks it RUNNING and replays one chunk after another through the same code as `ticketing dlq replay`
(``dlq.begin_replay`` / ``dlq.replay_chunk`` under ``dlq.replay_lock``), writing ``done``, ``affected`` and its
cursor after each chunk and renewing the lease. A runner that dies leaves a RUNNING job whose lease runs out:
the next runner (the restarted process, or another replica) claims it and goes on after the cursor. A job
whose service is being replayed by someone else waits (QUEUED, retried after a back-off).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ops import dlq
from shared import dead_letters, logs
from shared.messages import JobAccepted, JobKind, JobOutcome, JobStatus, StartJob

log = logs.get_logger(__name__)

BUSY_BACKOFF_SECONDS = 1.0
POLL_SECONDS = 1.0

Publish = dlq.Publish


class JobFailed(RuntimeError):
    """A job's step failed; its message is the job's error."""


def chunk_size(rate: float, lease_seconds: float) -> int:
    """Letters per chunk: at most ``dlq.REPLAY_BATCH``, and about a third of the lease of publishing at ``rate``
    (the lease is renewed after each chunk)."""
    return max(1, min(dlq.REPLAY_BATCH, int(rate * lease_seconds / 3)))


def _selector(params: dict[str, Any]) -> dead_letters.Selector:
    return dead_letters.Selector(
        ids=tuple(params.get("ids") or ()), group=params.get("group"), everything=bool(params.get("all"))
    )


async def submit(engine: AsyncEngine, cmd: StartJob) -> JobAccepted:
    """Record the job once (the id is the caller's: a redelivered command inserts nothing)."""
    if cmd.service not in dead_letters.dlq_services():
        return JobAccepted(
            outcome=JobOutcome.REFUSED, job_id=cmd.job_id, detail=f"no dead-letter queue for service {cmd.service!r}"
        )
    params = {"service": cmd.service, "ids": cmd.ids, "group": cmd.group, "all": cmd.everything, "rate": cmd.rate}
    try:
        _selector(params)
    except ValueError as exc:
        return JobAccepted(outcome=JobOutcome.REFUSED, job_id=cmd.job_id, detail=str(exc))
    async with engine.begin() as conn:
        await conn.execute(
            text("""
            INSERT INTO ops.jobs (id, kind, params, actor) VALUES (:id, :kind, CAST(:params AS jsonb), :actor)
            ON CONFLICT (id) DO NOTHING
        """),
            {"id": cmd.job_id, "kind": cmd.kind.value, "params": json.dumps(params), "actor": cmd.actor},
        )
        status = (await conn.execute(text("SELECT status FROM ops.jobs WHERE id = :id"), {"id": cmd.job_id})).scalar()
    return JobAccepted(outcome=JobOutcome.ACCEPTED, job_id=cmd.job_id, status=JobStatus(str(status)))


async def claim(engine: AsyncEngine, lease_seconds: float) -> Any | None:
    """The oldest job that is queued (and not backing off) or running with a lapsed lease, now RUNNING and
    leased to this runner."""
    async with engine.begin() as conn:
        return (
            await conn.execute(
                text("""
            UPDATE ops.jobs SET status = :running, started_at = coalesce(started_at, now()), updated_at = now(),
                   lease_until = now() + make_interval(secs => :lease)
             WHERE id = (SELECT id FROM ops.jobs
                          WHERE status IN (:queued, :running) AND (lease_until IS NULL OR lease_until < now())
                          ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING *
        """),
                {
                    "running": JobStatus.RUNNING.value,
                    "queued": JobStatus.QUEUED.value,
                    "lease": lease_seconds,
                },
            )
        ).first()


async def _update(engine: AsyncEngine, job_id: uuid.UUID, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE ops.jobs SET updated_at = now(), {sql} WHERE id = :id"), {"id": job_id, **params}
        )


class JobRunner:
    """Runs one job at a time in the ops process (several ops processes share the queue of jobs)."""

    def __init__(self, engine: AsyncEngine, publish: Publish, default_rate: float, lease_seconds: float) -> None:
        self.engine, self.publish, self.default_rate, self.lease = engine, publish, default_rate, lease_seconds
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                job = await claim(self.engine, self.lease)
            except Exception as exc:  # the database is away: try again after a pause
                log.warning("job_claim_failed", error=f"{type(exc).__name__}: {exc}")
                job = None
            if job is None:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=POLL_SECONDS)
                continue
            try:
                await self._run(job, stop)
            except Exception as exc:  # even recording the failure failed (the database is away): its lease
                log.warning("job_run_failed", job_id=str(job.id), error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(POLL_SECONDS)  # runs out, and the job is claimed again

    async def _run(self, job: Any, stop: asyncio.Event) -> None:
        try:
            if job.kind == JobKind.DLQ_REPLAY.value:
                await self._replay(job, stop)
            else:  # pragma: no cover - the table's CHECK allows no other kind
                raise ValueError(f"unknown job kind {job.kind!r}")
        except Exception as exc:
            error = (str(exc) if isinstance(exc, JobFailed) else f"{type(exc).__name__}: {exc}")[:2000]
            log.warning("job_failed", job_id=str(job.id), error=error)
            await _update(
                self.engine,
                job.id,
                "status = :failed, error = :error, finished_at = now(), lease_until = NULL",
                failed=JobStatus.FAILED.value,
                error=error,
            )

    async def _replay(self, job: Any, stop: asyncio.Event) -> None:
        params = dict(job.params)
        service, sel = params["service"], _selector(params)
        rate = float(params.get("rate") or self.default_rate)
        async with dlq.replay_lock(self.engine, service) as taken:
            if not taken:  # someone else replays this service: wait, then try again
                await _update(
                    self.engine,
                    job.id,
                    "status = :queued, lease_until = now() + make_interval(secs => :wait)",
                    queued=JobStatus.QUEUED.value,
                    wait=BUSY_BACKOFF_SECONDS,
                )
                return
            if job.total is None:  # first start: count, snapshot the upper bound, open the audit entry
                started, upto = await dlq.begin_replay(self.engine, service, sel, job.actor)
                total, audit_id, affected, cursor, done = started.matched, started.audit_id, 0, 0, 0
                await _update(
                    self.engine,
                    job.id,
                    "total = :total, upto = :upto, audit_id = :aid",
                    total=total,
                    upto=upto,
                    aid=audit_id,
                )
            else:  # resumed after its runner died
                total, upto, audit_id = job.total, job.upto, job.audit_id
                affected, cursor, done = job.affected, job.cursor, job.done
                log.info("job_resumed", job_id=str(job.id), cursor=cursor, done=done)
            result = dlq.ActionResult("replay", service, False, total, affected=affected, audit_id=audit_id)
            error: str | None = None
            try:
                while not stop.is_set():
                    chunk = await dlq.replay_chunk(
                        self.engine,
                        self.publish,
                        sel,
                        job.actor,
                        result,
                        after=cursor,
                        upto=upto,
                        limit=chunk_size(rate, self.lease),
                        interval=1.0 / rate,
                    )
                    if not chunk.scanned:
                        break
                    cursor, done = chunk.last_id, done + chunk.scanned
                    await _update(
                        self.engine,
                        job.id,
                        "done = :done, affected = :affected, cursor = :cursor, "
                        "lease_until = now() + make_interval(secs => :lease)",
                        done=done,
                        affected=result.affected,
                        cursor=cursor,
                        lease=self.lease,
                    )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:2000]
            if stop.is_set() and error is None:  # stopping: leave it RUNNING with no lease, for the next runner
                await _update(self.engine, job.id, "lease_until = NULL")
                return
        # Counted from the rows: a runner killed mid-chunk had marked letters it never wrote into the job.
        result.affected = await dlq.replayed_by(self.engine, int(audit_id or 0))
        await dlq.finish_audit(self.engine, int(audit_id or 0), result.affected, error)
        if error is not None:
            raise JobFailed(error)
        # Every matching letter was handled (replayed, skipped without a queue, or resolved by someone else).
        await _update(
            self.engine,
            job.id,
            "status = :status, done = :total, affected = :affected, finished_at = now(), lease_until = NULL",
            status=JobStatus.DONE.value,
            total=total,
            affected=result.affected,
        )
