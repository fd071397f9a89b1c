"""The DLQ keeper: consumes every service's dead-letter queue and moves each message into ops.dead_letters.

Insert first, then ack: a crash in between redelivers the message, and the row's fingerprint makes the second
insert a no-op. Competing keepers are safe for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ops import dlq
from shared import dead_letters, logs, metrics, topology
from shared.messaging import backoff
from shared.settings import Settings

log = logs.get_logger(__name__)

RETRY_PAUSE_SECONDS = 1.0  # the database is down: do not spin on the same message


class Keeper:
    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.names = topology.Names(settings.prefix)
        self.connection: AbstractRobustConnection | None = None
        self.queues: list[AbstractQueue] = []  # held: RobustConnection only restores referenced queues
        self.last_error: str | None = None

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Connect and consume every DLQ; each attempt bounded, retried with jittered backoff until it works
        (True) or ``stop`` is set (False)."""
        s = self.settings
        attempt = 0
        while True:
            try:
                await asyncio.wait_for(
                    self._start_once(), timeout=s.broker_connect_timeout_seconds + s.broker_operation_timeout_seconds
                )
                log.info("dlq_keeper_started", queues=[q.name for q in self.queues])
                return True
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                await self.stop()
                self.connection, self.queues = None, []
                pause = backoff(attempt, s.broker_retry_initial_seconds, s.broker_retry_max_seconds)
                log.warning(
                    "waiting_for_broker",
                    service="ops",
                    what="connect, consume the DLQs",
                    attempt=attempt + 1,
                    retry_in=round(pause, 2),
                    error=self.last_error,
                )
                attempt += 1
                if stop is None:
                    await asyncio.sleep(pause)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
                if stop.is_set():
                    return False

    async def _start_once(self) -> None:
        self.connection = await aio_pika.connect_robust(
            self.settings.rabbitmq_url, timeout=self.settings.broker_connect_timeout_seconds
        )
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=64)
        for service in dead_letters.dlq_services():
            await topology.declare_dlq(channel, self.names, service)
            queue = await channel.get_queue(self.names.dlq(service))
            await queue.consume(partial(self._on_message, service, queue.name))
            self.queues.append(queue)

    async def report_depths(self, interval: float) -> None:
        """Export what waits in every DLQ as gauges, so an alert can fire on a non-empty DLQ."""
        while True:
            try:
                async with self.engine.connect() as conn:
                    stats = await dead_letters.queue_stats(conn)
                for service in dead_letters.dlq_services():
                    s = stats.get(service, {})
                    metrics.DEAD_LETTERS_WAITING.labels(service=service).set(int(s.get("depth", 0)))
                    metrics.DEAD_LETTER_OLDEST_AGE.labels(service=service).set(float(s.get("oldest_age_seconds") or 0))
            except Exception as exc:
                log.warning("dlq_depth_report_failed", error=repr(exc)[:300])
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), timeout=self.settings.broker_operation_timeout_seconds)

    async def _on_message(self, service: str, queue: str, message: AbstractIncomingMessage) -> None:
        try:
            row = dlq.from_amqp(service, queue, message)
            async with self.engine.begin() as conn:
                stored = await dlq.store(conn, row)
        except Exception as exc:
            log.error("dlq_keeper_store_failed", queue=queue, error=repr(exc)[:300])
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            await message.nack(requeue=True)
            return
        await message.ack()
        if stored:
            metrics.DEAD_LETTERS_STORED.labels(service=service).inc()
            log.info(
                "dead_letter_stored",
                service=service,
                message_id=message.message_id,
                exception_type=row["exception_type"],
            )
