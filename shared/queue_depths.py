"""Messages waiting in named queues, read with a passive declare (no management plugin needed; nothing moves)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from shared import topology


async def depths(channel_factory: Callable[[], Awaitable[Any]], queues: Sequence[str]) -> dict[str, int | None]:
    """Each queue's message count (None: the queue does not exist or could not be read). A failed passive
    declare closes its channel, so each queue gets a channel of its own."""
    out: dict[str, int | None] = {}
    for queue in queues:
        channel = await channel_factory()
        try:
            q = await channel.declare_queue(queue, passive=True)
            out[queue] = int(q.declaration_result.message_count or 0)
        except Exception:
            out[queue] = None
        finally:
            if not channel.is_closed:
                await channel.close()
    return out


def work_queue_names(names: topology.Names) -> list[str]:
    """Every work queue and DLQ of a deployment (its quorum queues), work queues first."""
    work = [names.queue(q.name) for queues in topology.SERVICE_QUEUES.values() for q in queues]
    return work + [names.dlq(s) for s in topology.DLQ_SERVICES]
