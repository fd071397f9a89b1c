"""Dead letters as rows: conversion from AMQP, queries, replay (rate-limited, with confirms) and purge.

Why a table rather than peeking the queue: the management plugin is not enabled, and basic.get + nack on a
quorum queue reorders it and bumps delivery counts. The keeper moves each dead letter into ops.dead_letters
(insert, then ack), so listing, grouping and inspecting are plain SQL, and a replay is a republish with
confirms followed by a status change in the same transaction.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.dead_letters import Selector

# Headers that describe one death; a replay drops them so the next failure writes fresh ones.
DEATH_HEADERS = (
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-last-death-exchange",
    "x-reason",
    "x-exception-type",
    "x-stack",
    "x-failed-at",
    "x-attempts",
    "x-attempt",
    "x-last-error",
    "x-delivery-count",
)
REPLAY_BATCH = 100

Publish = Callable[[bytes, str, str, dict[str, Any], str | None], Awaitable[None]]
"""publish(body, queue, message_id, headers, correlation_id): to the default exchange, with a confirm."""


def jsonable(value: Any) -> Any:
    """AMQP header values (bytes, datetimes, nested tables) as JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUMBER = re.compile(r"\d+")


def normalize_reason(reason: str) -> str:
    """The part of a reason that identifies the failure, not the message: ids and numbers masked."""
    first = (reason or "").strip().splitlines()[0] if reason.strip() else ""
    return _NUMBER.sub("N", _UUID.sub("<id>", first))[:200]


def group_key(service: str, original_queue: str, routing_key: str, exception_type: str, reason: str) -> str:
    raw = "\x1f".join([service, original_queue, routing_key, exception_type, normalize_reason(reason)])
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC)


def from_amqp(service: str, dlq: str, raw: Any) -> dict[str, Any]:
    """A row for ops.dead_letters from an incoming DLQ message (ours, or dead-lettered by the broker)."""
    headers = jsonable(dict(raw.headers or {}))
    deaths = headers.get("x-death") or []
    first = deaths[-1] if isinstance(deaths, list) and deaths and isinstance(deaths[-1], dict) else {}
    original_queue = str(
        headers.get("x-original-queue") or headers.get("x-first-death-queue") or first.get("queue") or ""
    )
    keys = first.get("routing-keys") or [""]
    routing_key = str(headers.get("x-original-routing-key") or (keys[0] if keys else "") or raw.routing_key or "")
    exchange = str(
        headers.get("x-original-exchange") or headers.get("x-first-death-exchange") or first.get("exchange") or ""
    )
    broker_reason = str(headers.get("x-first-death-reason") or first.get("reason") or "")
    reason = str(
        headers.get("x-reason") or (f"dead-lettered by the broker: {broker_reason}" if broker_reason else "unknown")
    )
    exception_type = str(headers.get("x-exception-type") or broker_reason or "unknown")
    attempts = int(headers.get("x-attempts") or headers.get("x-delivery-count") or first.get("count") or 1)
    failed_at = _parse_time(headers.get("x-failed-at") or first.get("time") or datetime.now(UTC))
    replay_count = int(headers.get("x-replay-count") or 0)
    message_id = raw.message_id or ""
    body = bytes(raw.body)
    fingerprint = hashlib.sha256(
        "\x1f".join(
            [
                dlq,
                message_id,
                str(headers.get("x-failed-at") or ""),
                json.dumps(deaths, sort_keys=True),
                str(replay_count),
                hashlib.sha256(body).hexdigest(),
            ]
        ).encode()
    ).hexdigest()
    properties = jsonable(
        {
            "content_type": raw.content_type,
            "correlation_id": raw.correlation_id,
            "reply_to": raw.reply_to,
            "app_id": raw.app_id,
            "type": raw.type,
            "timestamp": raw.timestamp,
            "delivery_mode": int(raw.delivery_mode or 2),
            "exchange": raw.exchange,
            "routing_key": raw.routing_key,
        }
    )
    return {
        "fingerprint": fingerprint,
        "service": service,
        "dlq": dlq,
        "message_id": message_id,
        "original_queue": original_queue,
        "original_exchange": exchange,
        "routing_key": routing_key,
        "reason": reason[:4000],
        "exception_type": exception_type[:200],
        "group_key": group_key(service, original_queue, routing_key, exception_type, reason),
        "attempts": attempts,
        "replay_count": replay_count,
        "headers": json.dumps(headers),
        "properties": json.dumps(properties),
        "body": body,
        "failed_at": failed_at,
    }


async def store(conn: AsyncConnection, row: dict[str, Any]) -> bool:
    """Insert once (the fingerprint absorbs a delivery stored twice after a crash before its ack)."""
    result = await conn.execute(
        text("""
        INSERT INTO ops.dead_letters (fingerprint, service, dlq, message_id, original_queue, original_exchange,
               routing_key, reason, exception_type, group_key, attempts, replay_count, headers, properties, body,
               failed_at)
        VALUES (:fingerprint, :service, :dlq, :message_id, :original_queue, :original_exchange, :routing_key,
               :reason, :exception_type, :group_key, :attempts, :replay_count, CAST(:headers AS jsonb),
               CAST(:properties AS jsonb), :body, :failed_at)
        ON CONFLICT (fingerprint) DO NOTHING
    """),
        row,
    )
    return bool(result.rowcount)


# --- actions ------------------------------------------------------------------------------------------


@dataclass
class ActionResult:
    action: str
    service: str
    dry_run: bool
    matched: int
    affected: int = 0
    audit_id: int | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


async def matching(conn: AsyncConnection, service: str, sel: Selector) -> tuple[int, list[dict[str, Any]], int]:
    """How many waiting dead letters the selection matches, a sample of 20, and the highest id among them (a
    replay goes no further, so a letter that fails again while it runs is not replayed again by the same run)."""
    where, params = sel.where()
    rows = (
        (
            await conn.execute(
                text(f"""
        SELECT id, message_id, original_queue, routing_key, exception_type, left(reason, 200) AS reason
          FROM ops.dead_letters WHERE service = :service AND status = 'dead' AND {where} ORDER BY id
    """),
                {"service": service, **params},
            )
        )
        .mappings()
        .all()
    )
    return len(rows), [dict(r) for r in rows[:20]], int(rows[-1]["id"]) if rows else 0


async def count(conn: AsyncConnection, service: str, sel: Selector) -> tuple[int, list[dict[str, Any]]]:
    matched, sample, _ = await matching(conn, service, sel)
    return matched, sample


async def _audit(
    conn: AsyncConnection, actor: str, action: str, service: str, sel: Selector, dry_run: bool, matched: int
) -> int:
    return int(
        (
            await conn.execute(
                text("""
        INSERT INTO ops.audit_log (actor, action, service, selector, dry_run, matched, affected)
        VALUES (:actor, :action, :service, CAST(:selector AS jsonb), :dry_run, :matched, 0) RETURNING id
    """),
                {
                    "actor": actor,
                    "action": action,
                    "service": service,
                    "selector": sel.as_json(),
                    "dry_run": dry_run,
                    "matched": matched,
                },
            )
        ).scalar_one()
    )


async def finish_audit(engine: AsyncEngine, audit_id: int, affected: int, detail: str | None) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE ops.audit_log SET affected = :n, detail = :d WHERE id = :id"),
            {"n": affected, "d": detail, "id": audit_id},
        )


def replay_headers(row: Any, audit_id: int, actor: str) -> dict[str, Any]:
    headers = {k: v for k, v in dict(row.headers).items() if k not in DEATH_HEADERS}
    headers.update(
        {
            # The chassis routes a message by this header when it arrives on a work queue (Bus._dispatch).
            "x-original-routing-key": row.routing_key,
            "x-original-exchange": row.original_exchange,
            "x-replay-count": row.replay_count + 1,
            "x-replay-id": audit_id,
            "x-replayed-from": row.id,
            "x-replayed-by": actor,
        }
    )
    return headers


class ReplayInProgress(RuntimeError):
    """A replay of the same service is running: replays of one service are serialised."""


async def begin_replay(
    engine: AsyncEngine, service: str, sel: Selector, actor: str, *, dry_run: bool = False
) -> tuple[ActionResult, int]:
    """Count what the selection matches and open its audit entry; returns the result so far and the highest
    matching id (the replay's upper bound)."""
    async with engine.begin() as conn:
        matched, sample, upto = await matching(conn, service, sel)
        audit_id = await _audit(conn, actor, "replay", service, sel, dry_run, matched)
    return ActionResult("replay", service, dry_run, matched, audit_id=audit_id, sample=sample), upto


@asynccontextmanager
async def replay_lock(engine: AsyncEngine, service: str) -> AsyncIterator[bool]:
    """The service's replay lock (a PostgreSQL session advisory lock): yields whether it was taken."""
    async with engine.connect() as lock_conn:
        lock_conn = await lock_conn.execution_options(isolation_level="AUTOCOMMIT")
        key = {"key": f"ticketing.dlq-replay:{service}"}
        taken = bool((await lock_conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:key))"), key)).scalar())
        try:
            yield taken
        finally:
            if taken:
                await lock_conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)


@dataclass
class Chunk:
    last_id: int  # the cursor to go on from
    scanned: int  # matching letters handled (0: nothing left)


async def replay_chunk(
    engine: AsyncEngine,
    publish: Publish,
    sel: Selector,
    actor: str,
    result: ActionResult,
    *,
    after: int,
    upto: int,
    limit: int = REPLAY_BATCH,
    interval: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> Chunk:
    """Replay the next ``limit`` waiting letters of the selection with ``after < id <= upto``, pacing each
    publish by ``interval`` seconds; counts them into ``result.affected``. Call under ``replay_lock``."""
    where, params = sel.where()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(f"""
            SELECT * FROM ops.dead_letters
             WHERE service = :service AND status = 'dead' AND id > :last AND id <= :upto AND {where}
             ORDER BY id LIMIT :n
        """),
                {"service": result.service, "last": after, "upto": upto, "n": limit, **params},
            )
        ).all()
    chunk = Chunk(after, 0)
    assert result.audit_id is not None
    for row in rows:
        chunk.last_id, chunk.scanned = row.id, chunk.scanned + 1
        if not row.original_queue:
            continue  # nowhere to send it back to; stays in the DLQ for a purge
        props = dict(row.properties)
        await publish(
            bytes(row.body),
            row.original_queue,
            row.message_id,
            replay_headers(row, result.audit_id, actor),
            props.get("correlation_id"),
        )
        result.affected += await _mark_replayed(engine, row.id, actor, result.audit_id)
        metrics.DEAD_LETTERS_REPLAYED.labels(service=result.service).inc()
        if progress is not None:
            progress(result.affected, result.matched)
        if interval:
            await asyncio.sleep(interval)
    return chunk


async def replay(
    engine: AsyncEngine,
    publish: Publish,
    service: str,
    sel: Selector,
    actor: str,
    *,
    dry_run: bool = False,
    rate: float = 50.0,
    progress: Callable[[int, int], None] | None = None,
) -> ActionResult:
    """Republish to the queue each message came from, at most ``rate`` per second, each with a confirm.

    No row lock is held while publishing or pacing (a slow replay must not block purges, the keeper or other
    readers): one replay per service runs at a time, under a session advisory lock, and a row becomes
    'replayed' in a short transaction after its publish was confirmed. A crash in between replays it again
    later, which the idempotent consumers absorb. ``progress(done, matched)`` is called
    after each confirmed publish (a replay of thousands at the default rate takes minutes). The console's
    replays run the same chunks as background jobs of the ops service (``services/ops/jobs.py``)."""
    result, upto = await begin_replay(engine, service, sel, actor, dry_run=dry_run)
    if dry_run or result.matched == 0:
        return result
    interval = 1.0 / rate if rate > 0 else 0.0
    async with replay_lock(engine, service) as taken:
        if not taken:
            assert result.audit_id is not None
            await finish_audit(engine, result.audit_id, 0, "refused: another replay of this service is running")
            raise ReplayInProgress(f"another replay of {service} is running; try again when it ends")
        last_id = 0
        try:
            while True:
                chunk = await replay_chunk(
                    engine, publish, sel, actor, result, after=last_id, upto=upto, interval=interval, progress=progress
                )
                if not chunk.scanned:
                    break
                last_id = chunk.last_id
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
    assert result.audit_id is not None
    await finish_audit(engine, result.audit_id, result.affected, result.error)
    return result


async def replayed_by(engine: AsyncEngine, audit_id: int) -> int:
    """How many letters the replay of this audit entry marked replayed (exact even across a crash and resume)."""
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM ops.dead_letters WHERE action_id = :aid AND status = 'replayed'"),
                    {"aid": audit_id},
                )
            ).scalar_one()
        )


async def _mark_replayed(engine: AsyncEngine, dead_letter_id: int, actor: str, audit_id: int) -> int:
    async with engine.begin() as conn:
        marked = await conn.execute(
            text("""
            UPDATE ops.dead_letters SET status = 'replayed', resolved_at = now(), resolved_by = :actor,
                   action_id = :aid WHERE id = :id AND status = 'dead'
        """),
            {"actor": actor, "aid": audit_id, "id": dead_letter_id},
        )
    return int(marked.rowcount or 0)  # type: ignore[attr-defined]


async def purge(engine: AsyncEngine, service: str, sel: Selector, actor: str, *, dry_run: bool = False) -> ActionResult:
    """Mark dead letters purged (kept as evidence for the audit trail; never replayed)."""
    async with engine.begin() as conn:
        matched, sample = await count(conn, service, sel)
        audit_id = await _audit(conn, actor, "purge", service, sel, dry_run, matched)
        result = ActionResult("purge", service, dry_run, matched, audit_id=audit_id, sample=sample)
        if not dry_run and matched:
            where, params = sel.where()
            purged = (
                await conn.execute(
                    text(f"""
                UPDATE ops.dead_letters SET status = 'purged', resolved_at = now(), resolved_by = :actor,
                       action_id = :aid
                 WHERE service = :service AND status = 'dead' AND {where}
            """),
                    {"service": service, "actor": actor, "aid": audit_id, **params},
                )
            ).rowcount
            result.affected = int(purged or 0)
            await conn.execute(
                text("UPDATE ops.audit_log SET affected = :n WHERE id = :id"), {"n": result.affected, "id": audit_id}
            )
            metrics.DEAD_LETTERS_PURGED.labels(service=service).inc(result.affected)
    return result
