"""Consumers straight on aio-pika, for the hottest queues (a checkout's request in inventory, its reply in the
gateway): FastStream's subscriber layers (its middlewares, logging, acknowledgement and dependency wrappers)
cost more per message there than the handler itself (docs/decisions.md, section 7).

Same contract as the FastStream subscribers they replace: a work queue's message is acknowledged after its
handler returns and rejected without requeue (to the quorum queue's dead-letter target) if even the handler's
own failure path raised; a reply queue is exclusive, auto-deleted and consumed without acknowledgements. On
stop, no new delivery is taken and the in-flight handlers get a bounded time to finish (their unacknowledged
messages go back to the queue when the channel closes).

They share one plain connection of their own, kept by ``DirectConsumers``: when it (or a consumer's channel) is
lost, every consumer is started again on a new connection, retried with a growing pause until the broker takes
it. Not aio-pika's robust restore: right after a broker restart a quorum queue can refuse the passive declare
that restore makes, and the consumer would stay gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from shared import logs

log = logs.get_logger(__name__)

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


@dataclass
class DirectConsumer:
    queue_name: str
    on_message: OnMessage
    reply_queue: bool = False  # declare it (exclusive, auto-delete) and consume without acknowledgements
    _channel: AbstractChannel | None = None
    _queue: AbstractQueue | None = None
    _tag: str | None = None
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, connection: AbstractConnection, prefetch: int, on_lost: Callable[[], None]) -> None:
        self._channel = await connection.channel()
        self._channel.close_callbacks.add(lambda *_: on_lost())
        if self.reply_queue:
            self._queue = await self._channel.declare_queue(
                self.queue_name, durable=False, exclusive=True, auto_delete=True
            )
            self._tag = await self._queue.consume(self._deliver, no_ack=True)
            return
        await self._channel.set_qos(prefetch_count=prefetch)
        self._queue = await self._channel.get_queue(self.queue_name, ensure=False)  # declared by the topology
        self._tag = await self._queue.consume(self._deliver)

    async def _deliver(self, raw: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)  # type: ignore[arg-type]
        try:
            if self.reply_queue:
                await self.on_message(raw)
                return
            try:
                await self.on_message(raw)
            except Exception as exc:
                log.error("handler_escaped", queue=self.queue_name, error=repr(exc)[:300])
                await raw.reject(requeue=False)
                return
            await raw.ack()
        finally:
            if task is not None:
                self._in_flight.discard(task)  # type: ignore[arg-type]

    async def stop(self, timeout: float) -> None:
        """Take no new deliveries, give the in-flight handlers ``timeout`` seconds, close the channel."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._queue.cancel(self._tag), timeout=timeout)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), timeout=timeout)
        self._channel, self._queue, self._tag = None, None, None


@dataclass
class DirectConsumers:
    """The direct consumers of one bus, on one connection that is re-established whenever it is lost."""

    url: str
    prefetch: int
    timeout: float  # each connect and consumer start
    retry_initial: float
    retry_max: float
    consumers: list[DirectConsumer]
    _connection: AbstractConnection | None = None
    _task: asyncio.Task[None] | None = None
    _lost: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    async def start(self) -> None:
        """Connect and start every consumer; raises if that fails (the bus's start retries)."""
        if not self.consumers:
            return
        self._stopping = False
        await self._connect()
        self._task = asyncio.create_task(self._keep(), name="direct-consumers")

    async def _connect(self) -> None:
        self._lost = asyncio.Event()
        conn = await asyncio.wait_for(aio_pika.connect(self.url, timeout=self.timeout), timeout=self.timeout)
        conn.close_callbacks.add(self._on_lost)
        try:
            for consumer in self.consumers:
                await asyncio.wait_for(consumer.start(conn, self.prefetch, self._on_lost), timeout=self.timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=self.timeout)
            raise
        self._connection = conn

    def _on_lost(self, *_: Any) -> None:
        if not self._stopping:
            self._lost.set()

    async def _keep(self) -> None:
        attempt = 0
        while not self._stopping:
            await self._lost.wait()
            if self._stopping:
                return
            log.warning("direct_consumers_lost", queues=[c.queue_name for c in self.consumers])
            await self._drop_connection()
            while not self._stopping:
                ceiling = min(self.retry_max, self.retry_initial * 2 ** min(attempt, 30))
                await asyncio.sleep(ceiling / 2 + random.uniform(0, ceiling / 2))
                attempt += 1
                try:
                    await self._connect()
                except Exception as exc:
                    log.warning("waiting_for_broker", what="direct consumers", attempt=attempt, error=repr(exc)[:300])
                    await self._drop_connection()
                    continue
                log.info("direct_consumers_restarted", attempts=attempt)
                attempt = 0
                break

    async def _drop_connection(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=self.timeout)

    async def stop(self, timeout: float) -> None:
        """Stop every consumer (in-flight handlers get ``timeout``), then close the connection."""
        self._stopping = True
        for consumer in self.consumers:
            await consumer.stop(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()
