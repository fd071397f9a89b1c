"""Adapters from the handlers' shape, ``(message, unit of work) -> reply``, to the bus's consumers.

Every delivery gets a fresh unit of work (a unit of work is one transaction, never shared between messages).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.messages import Message
from shared.messaging import Bus, Delivery, Handler
from shared.uow import UnitOfWork

M = TypeVar("M", bound=Message)
U = TypeVar("U", bound=UnitOfWork)
R = TypeVar("R", bound=Message)


def answering(handler: Callable[[M, U], Awaitable[R]], new_uow: Callable[[], U], bus: Bus) -> Handler[M]:
    """A command handler whose typed reply goes back to the caller's reply queue."""

    async def consume(msg: M, delivery: Delivery) -> None:
        await bus.reply(delivery, await handler(msg, new_uow()))

    return consume


def handling(handler: Callable[[M, U], Awaitable[None]], new_uow: Callable[[], U]) -> Handler[M]:
    """An event handler: nothing to answer."""

    async def consume(msg: M, _: Delivery) -> None:
        await handler(msg, new_uow())

    return consume
