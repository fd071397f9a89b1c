"""Commands from the gateway to the service that owns the data: sent over RabbitMQ, answered with a typed reply.

One place decides what a broker that refuses the command means at the HTTP edge (503, nothing was accepted);
what a late answer means (``None``: the command is durable and will still be applied) is the route's to say."""

from __future__ import annotations

from typing import Any

from services.gateway.problems import Problem
from shared.messages import Message
from shared.requests import ReplyT


async def ask(
    state: Any, command: Message, reply: type[ReplyT], timeout: float, retry_after: int | None = None
) -> ReplyT | None:
    """The owner's typed reply, or None when it has not answered within ``timeout`` seconds."""
    try:
        return await state.requester.request(command, reply, timeout=timeout)  # type: ignore[no-any-return]
    except Exception as exc:  # the broker refused or is unreachable: nothing was accepted
        problem = Problem(
            503, "Service unavailable", f"could not queue the request: {type(exc).__name__}", "unavailable"
        )
        if retry_after is not None:
            problem.headers["Retry-After"] = str(retry_after)
        raise problem from exc
