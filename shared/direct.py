"""Consumers straight on aio-pika, for the hottest queues (a checkout's request in inventory, its reply in the
gateway): FastStream's subscriber layers (its middlewares, logging, acknowledgement and dependency wrappers)
cost more per message there than the handler itself (docs/decisions.md, section 7).

Same contract as the FastStream subscribers they replace: a work queue's message is acknowledged after its
handler returns and rejected without requeue (to the quorum queue's dead-letter target) if even the handler's
own failure path raised; a reply queue is exclusive, auto-deleted and consumed without acknowledgements. On
stop, no new delivery is taken and the in-flight handlers get a bounded time to finish (their unacknowledged
messages go back to the queue when the channel closes). On the bus's robust connection, a reconnect re-opens the
channel and re-registers the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

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

    async def start(self, connection: AbstractRobustConnection, prefetch: int) -> None:
        self._channel = await connection.channel()
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
