"""The service chassis for RabbitMQ: one FastStream broker per process, the shared topology,
publishing with confirms, and consumers that never crash-loop.

A consumer parses its message with a pydantic model and calls a typed handler. What happens on failure:

* the body does not parse, or the handler raises ``PermanentError``: the message goes to the service's
  dead-letter queue with the reason, the exception type and its original routing in headers;
* any other exception: the message is republished to the next step of the queue's retry ladder (TTL queues
  that dead-letter back into the work queue); after the last step, the dead-letter queue;
* only if even that publish fails does the exception escape: FastStream rejects the delivery and the quorum
  queue's own dead-letter settings (and delivery limit) still stop it from looping.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from faststream import AckPolicy
from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError

from shared import envelopes, logs, metrics, topology
from shared.direct import DirectConsumer, DirectConsumers
from shared.settings import Settings
from shared.topology import Names, WorkQueue

M = TypeVar("M", bound=BaseModel)
log = logs.get_logger(__name__)

MAX_REASON_CHARS = 2000


class PermanentError(Exception):
    """Retrying cannot help (bad data, a rule the message breaks): dead-letter at once."""


@dataclass(frozen=True)
class Delivery:
    message_id: str
    correlation_id: str  # the log correlation id (from the HTTP request)
    reply_to: str | None
    request_id: str | None  # the AMQP correlation id a reply must carry
    headers: dict[str, Any]
    routing_key: str
    redelivered: bool


Handler = Callable[[M, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Route(Generic[M]):
    model: type[M]
    handler: Handler[M]


async def raw_message(message: Any) -> Any:
    """FastStream decoder that hands the handler aio-pika's message itself: the body stays unparsed (a body
    that is not JSON must reach our dispatcher and the dead-letter queue with its reason, not fail inside the
    framework), and no parameter needs FastStream's dependency injection, which resolves a ``RabbitMessage``
    parameter in a worker thread: one thread hop per message, measured in docs/decisions.md."""
    return message.raw_message


Declare = Callable[[aio_pika.abc.AbstractChannel], Awaitable[None]]


def backoff(attempt: int, initial: float, cap: float) -> float:
    """Pause before connect attempt ``attempt + 1``: doubling up to ``cap``, jittered over its upper half so
    that services which lost the broker together do not all come back in the same instant."""
    ceiling = min(cap, initial * 2 ** min(attempt, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


class Bus:
    """A service's connection to RabbitMQ."""

    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.service = service
        self.names = Names(settings.prefix)
        self._app_id = f"ticketing-{service}"
        self.broker = RabbitBroker(
            settings.rabbitmq_url,
            # Returned (unroutable mandatory) publishes raise, so a command no queue takes fails loudly.
            default_channel=Channel(prefetch_count=settings.prefetch, on_return_raises=True),
            graceful_timeout=15.0,
            app_id=self._app_id,
            logger=None,
            # faststream_received_messages_total, ..._published_messages_total etc. on the process's /metrics
            middlewares=[RabbitPrometheusMiddleware(registry=REGISTRY, app_name=service)],
        )
        self._admin: AbstractRobustConnection | None = None
        self._declared_delay: set[int] = set()
        self._direct: list[DirectConsumer] = []  # started, on a connection of their own, after the broker
        self._directs: DirectConsumers | None = None
        self.connected = False  # start() completed once (afterwards the robust connections reconnect)
        self.last_error: str | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(
        self,
        declare_services: tuple[str, ...] = (),
        *,
        stop: asyncio.Event | None = None,
        declare: Declare | None = None,
        once: bool = False,
    ) -> bool:
        """Declare the topology (idempotent), then connect the broker and start its subscribers.

        Never waits on the broker without a deadline: each attempt is bounded, and a failed one is logged with
        what it waits for and retried after a jittered, growing pause, until it works (True) or ``stop`` is set
        (False). Meanwhile readiness reports the reason (``broker_check``). ``once``: a command-line tool's single
        bounded attempt, whose failure is raised for the tool to report."""
        attempt = 0
        while True:
            try:
                await self._start_once(declare_services, declare)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
                await self._close_quietly()
                if once:
                    raise
                pause = backoff(
                    attempt, self.settings.broker_retry_initial_seconds, self.settings.broker_retry_max_seconds
                )
                log.warning(
                    "waiting_for_broker",
                    service=self.service,
                    what="connect, declare, start consumers",
                    broker=self._where,
                    attempt=attempt + 1,
                    retry_in=round(pause, 2),
                    error=self.last_error,
                )
                attempt += 1
                if stop is None:
                    await asyncio.sleep(pause)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=pause)
                    if stop.is_set():
                        return False
                continue
            self.connected = True
            self.last_error = None
            if attempt:
                log.info("broker_connected", service=self.service, broker=self._where, attempts=attempt + 1)
            return True

    async def _start_once(self, declare_services: tuple[str, ...], declare: Declare | None) -> None:
        s = self.settings
        self._admin = await asyncio.wait_for(
            aio_pika.connect_robust(s.rabbitmq_url, timeout=s.broker_connect_timeout_seconds),
            timeout=s.broker_connect_timeout_seconds,
        )

        async def _declare() -> None:
            assert self._admin is not None
            channel = await self._admin.channel()
            await topology.declare_exchange(channel, self.names)
            for service in declare_services:
                await topology.declare_service(
                    channel, self.names, service, s.delivery_limit, max_length=s.work_queue_max_length
                )
            if declare is not None:
                await declare(channel)
            await channel.close()

        await asyncio.wait_for(_declare(), timeout=s.broker_operation_timeout_seconds)
        await asyncio.wait_for(
            self.broker.start(), timeout=s.broker_connect_timeout_seconds + s.broker_operation_timeout_seconds
        )
        self._directs = DirectConsumers(
            s.rabbitmq_url,
            s.prefetch,
            s.broker_operation_timeout_seconds,
            s.broker_retry_initial_seconds,
            s.broker_retry_max_seconds,
            self._direct,
        )
        await self._directs.start()

    async def _close_quietly(self) -> None:
        timeout = self.settings.broker_operation_timeout_seconds
        if self._directs is not None:
            await self._directs.stop(timeout)
            self._directs = None
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._admin.close(), timeout=timeout)
            self._admin = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.broker.stop(), timeout=timeout)

    @property
    def _where(self) -> str:
        url = urlsplit(self.settings.rabbitmq_url)  # never the password
        return f"{url.hostname}:{url.port or 5672}"

    async def stop(self) -> None:
        self.connected = False
        if self._directs is not None:  # like the broker's subscribers: in-flight handlers finish first
            await self._directs.stop(self.broker.config.graceful_timeout or 15.0)
            self._directs = None
        await self.broker.stop()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._admin.close(), timeout=self.settings.broker_operation_timeout_seconds)

    async def admin_channel(self) -> aio_pika.abc.AbstractChannel:
        if self._admin is None or self._admin.is_closed:
            raise ConnectionError(f"not connected to RabbitMQ ({self.last_error or 'starting'})")
        return await asyncio.wait_for(self._admin.channel(), timeout=self.settings.broker_operation_timeout_seconds)

    async def ensure_hold_delay_queue(self, hold_seconds: int) -> str:
        if hold_seconds not in self._declared_delay:
            channel = await self.admin_channel()
            try:
                await topology.declare_hold_delay_queue(channel, self.names, hold_seconds)
            finally:
                await channel.close()
            self._declared_delay.add(hold_seconds)
        return self.names.hold_delay_queue(hold_seconds)

    # --- publishing -------------------------------------------------------------------------------

    async def publish_raw(
        self,
        body: bytes,
        routing_key: str,
        *,
        exchange: str | None = None,
        message_id: str,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        persist: bool = True,
        mandatory: bool | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm (raises on nack, return or timeout). ``mandatory``: an
        unroutable message is returned and raises (default: for direct-to-queue publishes)."""
        hdrs = dict(headers or {})
        hdrs.setdefault(logs.CORRELATION_HEADER, logs.correlation_id.get() or correlation_id or message_id)
        cid = correlation_id or str(hdrs[logs.CORRELATION_HEADER])
        await self.broker.publish(
            body,
            exchange=self.names.events_exchange if exchange is None else exchange,
            routing_key=routing_key,
            persist=persist,
            mandatory=exchange == "" if mandatory is None else mandatory,
            timeout=self.settings.publish_timeout_seconds,
            headers=hdrs,
            message_id=message_id,
            correlation_id=cid,
            reply_to=reply_to,
            content_type="application/json",
        )

    async def publish(
        self, routing_key: str, model: BaseModel, *, message_id: str, reply_to: str | None = None
    ) -> None:
        await self.publish_raw(
            encode(model),
            routing_key,
            message_id=message_id,
            reply_to=reply_to,
            headers={"x-type": type(model).__name__},
        )

    async def reply(self, delivery: Delivery, model: BaseModel) -> None:
        """Answer a request on its reply queue (best effort: the caller can always poll)."""
        if not delivery.reply_to:
            return
        try:
            await self.publish_raw(
                encode(model),
                delivery.reply_to,
                exchange="",
                message_id=envelopes.reply_id(delivery.message_id),
                correlation_id=delivery.request_id,
                persist=False,
                headers={"x-type": type(model).__name__},  # the requester tells a batch's answer by its type
            )
        except Exception as exc:  # the requester may be gone; the state is committed either way
            log.warning("reply_failed", reply_to=delivery.reply_to, error=repr(exc))

    # --- consuming --------------------------------------------------------------------------------

    def consume(self, wq: WorkQueue, routes: dict[str, Route[Any]], *, direct: bool = False) -> None:
        """Consume a work queue; each routing key has its message model and handler. ``direct``: straight on
        aio-pika instead of a FastStream subscriber (the hottest queues: ``shared/direct.py``)."""
        queue_name = self.names.queue(wq.name)
        if direct:

            async def _on_message(raw: aio_pika.abc.AbstractIncomingMessage) -> None:
                await self._dispatch(wq, queue_name, routes, raw)

            self._direct.append(DirectConsumer(queue_name, _on_message))
            return
        queue = RabbitQueue(queue_name, queue_type=QueueType.QUORUM, declare=False)

        @self.broker.subscriber(queue, ack_policy=AckPolicy.REJECT_ON_ERROR, no_reply=True, decoder=raw_message)
        async def _consume(raw: Any) -> None:
            await self._dispatch(wq, queue_name, routes, raw)

    def consume_replies(
        self, queue_name: str, on_reply: Callable[[aio_pika.abc.AbstractIncomingMessage], None]
    ) -> None:
        """This process's own reply queue (exclusive, auto-deleted, no acknowledgements), consumed directly."""

        async def _on_message(raw: aio_pika.abc.AbstractIncomingMessage) -> None:
            on_reply(raw)

        self._direct.append(DirectConsumer(queue_name, _on_message, reply_queue=True))

    async def _dispatch(
        self,
        wq: WorkQueue,
        queue_name: str,
        routes: dict[str, Route[Any]],
        raw: aio_pika.abc.AbstractIncomingMessage,
    ) -> None:
        headers = dict(raw.headers or {})
        message_id = raw.message_id or ""
        cid = str(headers.get(logs.CORRELATION_HEADER) or raw.correlation_id or message_id)
        logs.set_correlation_id(cid)
        # A message back from a retry queue or a replay carries its first routing key in a header.
        routing_key = str(headers.get("x-original-routing-key") or raw.routing_key or "")
        started = time.perf_counter()
        try:
            route = routes.get(routing_key)
            if route is None:
                await self.dead_letter(
                    wq, queue_name, raw, f"no handler for routing key {routing_key!r}", "UnknownRoutingKey"
                )
                return
            try:
                payload = route.model.model_validate_json(raw.body)
            except ValidationError as exc:
                await self.dead_letter(wq, queue_name, raw, f"invalid message: {exc}", "ValidationError")
                return
            delivery = Delivery(
                message_id=message_id,
                correlation_id=cid,
                reply_to=raw.reply_to,
                request_id=raw.correlation_id,
                headers=headers,
                routing_key=routing_key,
                redelivered=bool(raw.redelivered),
            )
            try:
                await route.handler(payload, delivery)
            except PermanentError as exc:
                await self.dead_letter(wq, queue_name, raw, str(exc), type(exc).__name__)
            except Exception as exc:
                await self._retry_or_dead_letter(wq, queue_name, raw, exc)
        finally:
            metrics.HANDLER_LATENCY.labels(queue=wq.name).observe(time.perf_counter() - started)

    async def _retry_or_dead_letter(
        self, wq: WorkQueue, queue_name: str, raw: aio_pika.abc.AbstractIncomingMessage, exc: Exception
    ) -> None:
        headers = dict(raw.headers or {})
        attempt = int(str(headers.get("x-attempt", 0) or 0))
        reason = f"{type(exc).__name__}: {exc}"
        if attempt >= len(wq.retry_delays):
            await self.dead_letter(wq, queue_name, raw, f"retries exhausted: {reason}", type(exc).__name__)
            return
        delay = wq.retry_delays[attempt]
        log.warning("handler_failed_retrying", queue=wq.name, attempt=attempt + 1, delay=delay, error=reason)
        headers.pop("x-death", None)  # our own headers carry the history; avoid dead-letter cycle checks
        headers.update(
            {
                "x-attempt": attempt + 1,
                "x-last-error": reason[:MAX_REASON_CHARS],
                "x-original-routing-key": headers.get("x-original-routing-key", raw.routing_key or ""),
            }
        )
        await self.publish_raw(
            raw.body,
            self.names.retry_queue(queue_name, delay),
            exchange="",
            message_id=raw.message_id or "",
            headers=headers,
            correlation_id=raw.correlation_id,
            reply_to=raw.reply_to,
        )
        metrics.MESSAGES_RETRIED.labels(queue=wq.name).inc()

    async def dead_letter(
        self,
        wq: WorkQueue,
        queue_name: str,
        raw: aio_pika.abc.AbstractIncomingMessage,
        reason: str,
        exception_type: str,
    ) -> None:
        headers = dict(raw.headers or {})
        headers.pop("x-death", None)
        headers.update(
            {
                "x-reason": reason[:MAX_REASON_CHARS],
                "x-exception-type": exception_type,
                "x-attempts": int(str(headers.get("x-attempt", 0) or 0)) + 1,
                "x-original-queue": queue_name,
                "x-original-exchange": headers.get("x-original-exchange", raw.exchange or ""),
                "x-original-routing-key": headers.get("x-original-routing-key", raw.routing_key or ""),
                "x-failed-at": datetime.now(UTC).isoformat(),
            }
        )
        if exception_type != "ValidationError":
            headers["x-stack"] = traceback.format_exc(limit=5)[-MAX_REASON_CHARS:]
        log.error("dead_lettered", queue=wq.name, reason=reason[:300], exception_type=exception_type)
        await self.publish_raw(
            raw.body,
            self.names.dlq(wq.service),
            exchange="",
            message_id=raw.message_id or "",
            headers=headers,
            correlation_id=raw.correlation_id,
        )
        metrics.MESSAGES_DEAD_LETTERED.labels(queue=wq.name).inc()
