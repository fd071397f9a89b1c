"""What a consumer pays per message for FastStream's dependency injection of a ``RabbitMessage`` parameter
(resolved in a worker thread) against a decoder that hands the handler aio-pika's message (what
``shared/messaging.py`` does). One consumer, one queue of its own on the real broker, N messages per round.

    .venv/bin/python -m bench.consumer_hop [--messages 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid
from typing import Any

import aio_pika
from faststream import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from rich.console import Console
from rich.table import Table

from shared.messaging import raw_message
from shared.settings import Settings


async def one_round(url: str, variant: str, n: int) -> tuple[float, int]:
    """CPU ms per message of this process (consuming, plus publishing them), and the threads it ended with."""
    queue = RabbitQueue(f"bench-hop-{uuid.uuid4().hex[:8]}", auto_delete=True)
    broker = RabbitBroker(url, logger=None)
    done, count = asyncio.Event(), 0

    def seen() -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async def raw_body(message: Any) -> bytes:
        return bytes(message.body)

    if variant == "injected RabbitMessage":

        @broker.subscriber(queue, ack_policy=AckPolicy.ACK_FIRST, no_reply=True, decoder=raw_body)
        async def injected(message: RabbitMessage) -> None:
            seen()
    else:

        @broker.subscriber(queue, ack_policy=AckPolicy.ACK_FIRST, no_reply=True, decoder=raw_message)
        async def decoded(raw: Any) -> None:
            seen()

    await broker.start()
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        cpu = time.process_time()
        for _ in range(n):
            await channel.default_exchange.publish(aio_pika.Message(b'{"a": 1}'), routing_key=queue.name)
        await asyncio.wait_for(done.wait(), timeout=120)
        return 1000 * (time.process_time() - cpu) / n, threading.active_count()
    finally:
        await conn.close()
        await broker.stop()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    url = Settings().rabbitmq_url
    variants = ("injected RabbitMessage", "decoder (shipped)")
    results: dict[str, list[float]] = {v: [] for v in variants}
    threads: dict[str, int] = {}
    for _ in range(args.rounds):  # alternate, so noise hits both alike
        for v in variants:
            ms, threads[v] = await one_round(url, v, args.messages)
            results[v].append(ms)
    table = Table("handler parameter", "CPU ms/message min / median / max", "vs injected", "threads at the end")
    base = statistics.median(results[variants[0]])
    for v in variants:
        r = sorted(results[v])
        table.add_row(
            v,
            f"{r[0]:.3f} / {statistics.median(r):.3f} / {r[-1]:.3f}",
            f"{statistics.median(r) / base:.2f}x",
            str(threads[v]),
        )
    Console().print(table)


if __name__ == "__main__":
    asyncio.run(main())
