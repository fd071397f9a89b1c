"""Request/reply over RabbitMQ: the gateway publishes a durable command and waits a bounded time for the
owning service's answer on this gateway instance's own (exclusive, auto-delete) reply queue.

The command is durable and its effects are committed by its owner whether or not the answer arrives in
time; a caller that times out answers 202 and the client polls.
"""

from __future__ import annotations

import asyncio
import uuid

from faststream import AckPolicy
from faststream.rabbit import RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from pydantic import BaseModel

from shared.messages import CommandResult
from shared.messaging import Bus


class Requester:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.reply_queue = bus.names.queue(f"gateway.replies.{uuid.uuid4().hex[:16]}")
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        queue = RabbitQueue(self.reply_queue, durable=False, exclusive=True, auto_delete=True)

        @bus.broker.subscriber(queue, ack_policy=AckPolicy.ACK_FIRST, no_reply=True)
        async def _on_reply(message: RabbitMessage) -> None:
            future = self._waiting.pop(message.raw_message.correlation_id or "", None)
            if future is not None and not future.done():
                future.set_result(message.raw_message.body)

    async def request(
        self, routing_key: str, command: BaseModel, *, message_id: str, timeout: float
    ) -> CommandResult | None:
        """Publish (with confirm; raises if the broker refuses) and wait; None when no answer came in time."""
        request_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self.bus.publish_raw(
                command.model_dump_json().encode(), routing_key, message_id=message_id,
                correlation_id=request_id, reply_to=self.reply_queue,
                headers={"x-type": type(command).__name__},
            )
            body = await asyncio.wait_for(future, timeout=timeout)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(request_id, None)
        return CommandResult.model_validate_json(body)
