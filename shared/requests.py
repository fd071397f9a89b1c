"""Request/reply over RabbitMQ: a caller (the gateway, a CLI) publishes a durable command and waits a bounded
time for the owning service's typed answer on the caller's own (exclusive, auto-delete) reply queue.

The command is durable and its effects are committed by its owner whether or not the answer arrives in
time; a caller that times out answers 202 and the client polls.

Checkouts are coalesced (natural batching, no added delay): while no batch is being published, a checkout is
published at once, as a ``CheckoutBatch`` of one; while one is (until its publisher confirm), the checkouts
that arrive wait and go together in the next one, up to ``checkout_batch_max``. Each caller still waits for its
own answer with its own timeout, found by its item's ``request_id`` in inventory's one ``CheckoutsDecided``.
A batch the broker refuses (nack, unroutable) raises to every caller in it, as a refused single command does
to its caller (the gateway answers 503); a publish that times out means "no answer" (None) to each, as before.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from shared import envelopes, logs
from shared.messages import BatchedCheckout, CheckoutBatch, CheckoutRequested, CheckoutsDecided, Message
from shared.messaging import Bus

ReplyT = TypeVar("ReplyT", bound=Message)
T = TypeVar("T")
log = logs.get_logger(__name__)


class Coalescer(Generic[T]):
    """Natural batching of publishes: ``submit`` returns once the batch holding its item is published.

    At most one ``send(batch)`` is in flight; items submitted meanwhile queue up and go in the next call (at
    most ``max_batch`` per call, in submission order). ``send``'s exception is raised to every submitter of
    that batch. A lone item pays no delay but one turn of the event loop."""

    def __init__(self, send: Callable[[list[T]], Awaitable[None]], max_batch: int) -> None:
        self._send = send
        self._max_batch = max(1, max_batch)
        self._queued: list[tuple[T, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((item, sent))
        if self._sender is None:
            self._sender = asyncio.create_task(self._run(), name="coalescer")
        await sent

    async def _run(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued[: self._max_batch], self._queued[self._max_batch :]
                try:
                    await self._send([item for item, _ in batch])
                except Exception as exc:
                    for _, sent in batch:
                        if not sent.done():  # a submitter that was cancelled left a cancelled future
                            sent.set_exception(exc)
                    continue
                for _, sent in batch:
                    if not sent.done():
                        sent.set_result(None)
        finally:
            self._sender = None


class Requester:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.reply_queue = bus.names.queue(f"gateway.replies.{uuid.uuid4().hex[:16]}")
        self._waiting: dict[str, asyncio.Future[bytes | Message]] = {}
        self._checkouts: Coalescer[BatchedCheckout] = Coalescer(
            self._publish_checkouts, bus.settings.checkout_batch_max
        )
        bus.consume_replies(self.reply_queue, self._on_reply)

    def _on_reply(self, raw: Any) -> None:
        if (raw.headers or {}).get("x-type") == CheckoutsDecided.__name__:
            try:
                decisions = CheckoutsDecided.model_validate_json(raw.body).decisions
            except ValidationError as exc:  # its callers time out (202) and poll, as for a lost reply
                log.error("reply_invalid", reply_type=CheckoutsDecided.__name__, error=str(exc)[:300])
                return
            for item in decisions:
                self._resolve(item.request_id, item.decided)
            return
        self._resolve(raw.correlation_id or "", raw.body)

    def _resolve(self, request_id: str, answer: bytes | Message) -> None:
        future = self._waiting.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(answer)

    async def request(self, command: Message, reply: type[ReplyT], *, timeout: float) -> ReplyT | None:
        """Publish (with confirm; raises if the broker refuses) and wait for the answer of type ``reply``; None
        when no answer came in time. Routing key and message id come from the command (``shared.envelopes``).
        A checkout goes in the next ``CheckoutBatch`` (module docstring) unless ``checkout_batch_max`` is 1."""
        request_id = uuid.uuid4().hex
        future: asyncio.Future[bytes | Message] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            if isinstance(command, CheckoutRequested) and self.bus.settings.checkout_batch_max > 1:
                item = BatchedCheckout(
                    request_id=request_id, correlation_id=logs.correlation_id.get()[:64], checkout=command
                )
                await self._checkouts.submit(item)
            else:
                await self.bus.publish_raw(
                    command.model_dump_json().encode(),
                    envelopes.routing_key(command),
                    message_id=envelopes.message_id(command),
                    correlation_id=request_id,
                    reply_to=self.reply_queue,
                    mandatory=True,  # a command no queue takes must fail here (503), not vanish
                    headers={"x-type": type(command).__name__},
                )
            answer = await asyncio.wait_for(future, timeout=timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(request_id, None)
        if isinstance(answer, bytes):
            return reply.model_validate_json(answer)
        if not isinstance(answer, reply):
            raise TypeError(f"expected {reply.__name__}, got {type(answer).__name__}")
        return answer

    async def _publish_checkouts(self, items: list[BatchedCheckout]) -> None:
        batch = CheckoutBatch(checkouts=items)
        await self.bus.publish_raw(
            batch.model_dump_json().encode(),
            envelopes.routing_key(batch),
            message_id=envelopes.message_id(batch),
            correlation_id=f"batch-{uuid.uuid4().hex}",  # the items carry their own: see _on_reply
            reply_to=self.reply_queue,
            mandatory=True,  # no queue bound to checkout.batch: every caller of the batch gets 503
            headers={"x-type": CheckoutBatch.__name__, logs.CORRELATION_HEADER: items[0].correlation_id or "batch"},
        )
