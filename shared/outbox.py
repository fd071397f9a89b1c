"""Transactional outbox: a message that follows a database change is written in the same transaction
and relayed afterwards with publisher confirms, so a crash between commit and publish loses nothing.

Each owning schema has its own ``outbox`` table (see migrations). The relay deletes a batch in one statement
whose rows it locks with ``FOR UPDATE SKIP LOCKED`` (several relays may run), publishes it with confirms and
only then commits the deletion: a failed publish or a crash mid-batch rolls the deletion back and the batch is
published again, which idempotent consumers absorb. A writer in the
same process wakes the relay at once; the poll interval covers writers in other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import db, logs, metrics
from shared.messaging import Bus, encode

log = logs.get_logger(__name__)

EVENTS_EXCHANGE = "@events"  # stored instead of the prefixed name, so the relay resolves it
BACKLOG_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class Outgoing:
    routing_key: str
    body: bytes
    message_id: str
    exchange: str = EVENTS_EXCHANGE  # "" = the default exchange (routing_key is a queue name)
    headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def event(cls, routing_key: str, model: BaseModel, message_id: str, correlation_id: str = "") -> Outgoing:
        return cls(routing_key, encode(model), message_id, headers=_headers(model, correlation_id))

    @classmethod
    def to_queue(cls, queue: str, model: BaseModel, message_id: str, correlation_id: str = "") -> Outgoing:
        return cls(queue, encode(model), message_id, exchange="", headers=_headers(model, correlation_id))


def _headers(model: BaseModel, correlation_id: str) -> dict[str, Any]:
    headers: dict[str, Any] = {"x-type": type(model).__name__}
    if correlation_id:
        headers[logs.CORRELATION_HEADER] = correlation_id
    return headers


def _insert_sql(schema: str) -> str:
    # One statement per unit of work, whatever its number of messages: arrays unnested in their order, so the
    # rows' ids (the relay's order) follow the order the messages were emitted in.
    return (
        f"INSERT INTO {schema}.outbox (exchange, routing_key, message_id, headers, body) "
        "SELECT e, r, m, CAST(h AS jsonb), b FROM unnest("
        "CAST($1 AS text[]), CAST($2 AS text[]), CAST($3 AS text[]), CAST($4 AS text[]), CAST($5 AS bytea[])"
        ") WITH ORDINALITY AS u(e, r, m, h, b, n) ORDER BY n"
    )


def _drain_sql(schema: str) -> str:
    # Lock a batch (skipping rows another relay holds) and delete it in one statement; the deletion commits
    # only after every message of the batch was confirmed, so a failed publish or a crash puts it all back.
    return (
        f"DELETE FROM {schema}.outbox WHERE id = ANY(ARRAY(SELECT id FROM {schema}.outbox "
        "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)) "
        "RETURNING id, exchange, routing_key, message_id, headers, body"
    )


_INSERT: dict[str, str] = {}
_DRAIN: dict[str, str] = {}


async def add(conn: AsyncConnection, schema: str, messages: Sequence[Outgoing]) -> None:
    if not messages:
        return
    sql = _INSERT.get(schema) or _INSERT.setdefault(schema, _insert_sql(schema))
    cid = logs.correlation_id.get()
    await db.fetch(
        conn,
        sql,
        *(
            [m.exchange for m in messages],
            [m.routing_key for m in messages],
            [m.message_id for m in messages],
            [json.dumps({logs.CORRELATION_HEADER: cid, **m.headers} if cid else m.headers) for m in messages],
            [m.body for m in messages],
        ),
    )


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        bus: Bus,
        poll_seconds: float = 0.5,
        batch: int = 500,
        exit_before_publish: bool = False,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.bus = bus
        self.poll_seconds = poll_seconds
        self.batch = batch
        self._exit_before_publish = exit_before_publish  # fault injection for the crash tests only
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        backoff = self.poll_seconds
        measured_at = 0.0
        while not self._stopping:
            try:
                while await self.drain_once() >= self.batch:
                    pass
                backoff = self.poll_seconds
            except Exception as exc:
                log.warning("outbox_relay_failed", schema=self.schema, error=repr(exc))
                backoff = min(backoff * 2, 10.0)
            # Measured here, after a drain or a failed one, so a relay that cannot publish still reports a
            # growing backlog; at most every BACKLOG_EVERY_SECONDS, the count being the costly part.
            if time.monotonic() - measured_at >= BACKLOG_EVERY_SECONDS:
                measured_at = time.monotonic()
                with contextlib.suppress(Exception):  # the database being down is reported by /readyz
                    await self.measure_backlog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            self._wake.clear()

    async def drain_once(self) -> int:
        """One batch: BEGIN, the locking DELETE, the confirmed publishes, COMMIT: three round trips, on asyncpg
        itself (the relay runs nothing through SQLAlchemy in this transaction, so SQLAlchemy's adapter never
        starts one of its own; a connection left in a transaction or lost is invalidated, never pooled)."""
        sql = _DRAIN.get(self.schema) or _DRAIN.setdefault(self.schema, _drain_sql(self.schema))
        async with self.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            assert raw is not None
            try:
                async with raw.transaction():
                    rows = sorted(await raw.fetch(sql, self.batch), key=lambda r: r["id"])
                    if rows and self._exit_before_publish:
                        log.error("fault_injection_exit_before_publish", rows=len(rows))
                        os._exit(70)
                    await asyncio.gather(*(self._publish(r) for r in rows))
            finally:
                if raw.is_closed() or raw.is_in_transaction():
                    await conn.invalidate()
        if rows:
            metrics.OUTBOX_PUBLISHED.labels(schema=self.schema).inc(len(rows))
        return len(rows)

    async def measure_backlog(self) -> tuple[int, float]:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {self.schema}.outbox LIMIT 100000) AS b), "
                        f"COALESCE(EXTRACT(EPOCH FROM now() - (SELECT created_at FROM {self.schema}.outbox "
                        "ORDER BY id LIMIT 1)), 0)"
                    )
                )
            ).one()
        backlog, age = int(row[0]), max(float(row[1]), 0.0)
        metrics.OUTBOX_BACKLOG.labels(schema=self.schema).set(backlog)
        metrics.OUTBOX_OLDEST_AGE.labels(schema=self.schema).set(age)
        return backlog, age

    async def _publish(self, row: Any) -> None:
        headers = dict(row["headers"] or {})
        exchange = None if row["exchange"] == EVENTS_EXCHANGE else row["exchange"]
        await self.bus.publish_raw(
            bytes(row["body"]),
            row["routing_key"],
            exchange=exchange,
            message_id=row["message_id"],
            headers=headers,
            correlation_id=headers.get(logs.CORRELATION_HEADER),
        )
