"""Request/reply over RabbitMQ: a caller (the gateway, a CLI) publishes a durable command and waits a bounded
time for the owning service's typed answer on the caller's own (exclusive, auto-delete) reply queue.

The command is durable and its effects are committed by its owner whether or not the answer arrives in
time; a caller that times out answers 202 and the client polls.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, TypeVar

from shared import envelopes
from shared.messages import Message
from shared.messaging import Bus

ReplyT = TypeVar("ReplyT", bound=Message)


class Requester:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.reply_queue = bus.names.queue(f"gateway.replies.{uuid.uuid4().hex[:16]}")
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        bus.consume_replies(self.reply_queue, self._on_reply)

    def _on_reply(self, raw: Any) -> None:
        future = self._waiting.pop(raw.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(raw.body)

    async def request(self, command: Message, reply: type[ReplyT], *, timeout: float) -> ReplyT | None:
        """Publish (with confirm; raises if the broker refuses) and wait for the answer of type ``reply``; None
        when no answer came in time. Routing key and message id come from the command (``shared.envelopes``)."""
        request_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self.bus.publish_raw(
                command.model_dump_json().encode(),
                envelopes.routing_key(command),
                message_id=envelopes.message_id(command),
                correlation_id=request_id,
                reply_to=self.reply_queue,
                mandatory=True,  # a command no queue takes must fail here (503), not vanish
                headers={"x-type": type(command).__name__},
            )
            body = await asyncio.wait_for(future, timeout=timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(request_id, None)
        return reply.model_validate_json(body)
