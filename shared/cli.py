"""What the operator CLIs of every service share: who is acting, and one command to its owner from a process
that lives for that command only."""

from __future__ import annotations

import getpass
import os
import socket

from shared.messages import Message
from shared.messaging import Bus
from shared.requests import ReplyT, Requester
from shared.settings import get_settings


def default_actor() -> str:
    """``$USER@host``: who an audited CLI action is recorded as, unless ``--actor`` says otherwise."""
    return f"{os.environ.get('USER') or getpass.getuser()}@{socket.gethostname()}"


async def request_once(client: str, command: Message, reply: type[ReplyT], timeout: float) -> ReplyT | None:
    """Send ``command`` and wait for its typed reply on a bus of this process's own (None: no answer in time; the
    command is durable). A broker that is down fails at once (``Bus.start(once=True)``), for a one-line error."""
    bus = Bus(get_settings(), client)
    requester = Requester(bus)  # subscribes its reply queue before the broker starts
    await bus.start(once=True)
    try:
        return await requester.request(command, reply, timeout=timeout)
    finally:
        await bus.stop()
