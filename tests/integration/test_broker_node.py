"""The broker checks and the node of our own (ticketing/broker_node.py), on a real RabbitMQ node."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator

import aio_pika
import pytest

from ticketing import broker_node
from ticketing.broker_node import BrokerNode, LocalNode
from ticketing.ports import free_port


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerNode]:
    n = BrokerNode.create("ticketing-itest")
    n.start()
    yield n
    n.stop()


@pytest.fixture
async def amqp(node: BrokerNode) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    conn = await aio_pika.connect(node.url, timeout=10)
    yield conn
    await conn.close()


async def test_a_wedged_broker_is_reported_within_the_deadline_not_waited_on() -> None:
    # What a wedged RabbitMQ looks like from outside: TCP accepted, no Connection.Start ever.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"amqp://guest:guest@127.0.0.1:{listener.getsockname()[1]}/"
        started = time.monotonic()
        why = await broker_node.amqp_handshake(url, timeout=2.0)
        elapsed = time.monotonic() - started
    assert why is not None and "no AMQP handshake within 2 s" in why
    assert elapsed < 4.0


async def test_a_closed_port_is_reported_at_once() -> None:
    why = await broker_node.amqp_handshake(f"amqp://guest:guest@127.0.0.1:{free_port()}/", timeout=5)
    assert why is not None and "Connect" in why


def test_own_node_runs_with_the_raised_file_limit_and_is_found_from_its_port(node: BrokerNode) -> None:
    assert broker_node.handshake_ok(node.url, 5) is None
    soft, hard = node.fd_limits() or (0, 0)
    assert soft == hard >= broker_node.MINIMUM_FD_LIMIT  # not the 1,024 `su` leaves
    found = LocalNode.find(node.port)
    assert found is not None and found.name == node.name and found.pid == node.pid()
    assert found.queues() is not None


async def test_sweep_deletes_dead_runs_only(node: BrokerNode, amqp: aio_pika.abc.AbstractConnection) -> None:
    channel = await amqp.channel()
    for q in ("test-dead1.inventory.checkout", "test-dead1.inventory.checkout.retry.1s"):
        await channel.declare_queue(q, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.declare_exchange("test-dead1.ticketing.events", aio_pika.ExchangeType.TOPIC, durable=True)
    live_work = await channel.declare_queue("test-live1.inventory.checkout", durable=True)
    await channel.declare_queue("test-live1.inventory.checkout.retry.1s", durable=True)  # never has a consumer
    await live_work.consume(_ignore)
    await channel.declare_queue("prod.inventory.checkout", durable=True)  # not a test run's: never touched

    runs, deleted = await broker_node.sweep_stale(node.url, "test-")

    names = {name for name, _, _ in LocalNode.find(node.port).queues() or ()}  # type: ignore[union-attr]
    assert (runs, deleted) == (1, 2)
    assert not any(n.startswith("test-dead1.") for n in names)
    assert {
        "test-live1.inventory.checkout",
        "test-live1.inventory.checkout.retry.1s",
        "prod.inventory.checkout",
    } <= names
    exchanges = LocalNode.find(node.port).exchanges() or []  # type: ignore[union-attr]
    assert "test-dead1.ticketing.events" not in exchanges

    await channel.close()
    assert await broker_node.delete_prefix(node.url, "test-live1.") == 2
    await broker_node.delete_prefix(node.url, "prod.")
    names = {name for name, _, _ in LocalNode.find(node.port).queues() or ()}  # type: ignore[union-attr]
    assert not names


def test_stopping_the_node_frees_its_port_and_removes_its_data() -> None:
    n = BrokerNode.create("ticketing-itest-stop")
    n.start()
    n.stop()
    assert not n.base.exists()
    assert broker_node.handshake_ok(n.url, 2) is not None


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()
