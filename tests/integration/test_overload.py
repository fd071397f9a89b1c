"""Overload protection on a real broker: a full work queue refuses publishes, and a command no queue takes is
refused too, so a publisher learns at once (the gateway answers 503) instead of a message vanishing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from shared import topology
from shared.messages import CheckoutRequested, OrderLine
from shared.messaging import Bus
from shared.requests import Requester
from shared.settings import Settings


@pytest.fixture
async def bus(server_settings: Settings) -> AsyncIterator[Bus]:
    prefix = f"overload-{uuid.uuid4().hex[:8]}."
    settings = server_settings.model_copy(
        update={"prefix": prefix, "work_queue_max_length": 3, "publish_timeout_seconds": 5.0}
    )
    b = Bus(settings, "overload-test")
    await b.start(once=True)
    yield b
    await b.stop()
    conn = await aio_pika.connect(settings.rabbitmq_url, timeout=10)
    channel = await conn.channel()
    names = topology.Names(prefix)
    for name in topology.all_queue_names(names):
        await channel.queue_delete(name)
    await channel.exchange_delete(names.events_exchange)
    await conn.close()


def checkout() -> CheckoutRequested:
    return CheckoutRequested(
        order_id=uuid.uuid4(), user_id="u", items=[OrderLine(ticket_type_id=uuid.uuid4(), quantity=1)]
    )


async def test_a_full_work_queue_refuses_the_next_publish(bus: Bus) -> None:
    channel = await bus.admin_channel()
    await topology.declare_service(channel, bus.names, "inventory", 5, max_length=3)
    await channel.close()
    accepted = 0
    with pytest.raises(Exception) as refused:  # nobody consumes: the queue fills to its bound, then refuses
        for _ in range(10):
            await bus.publish(topology.CHECKOUT_REQUESTED, checkout(), message_id=uuid.uuid4().hex)
            accepted += 1
    assert "nack" in repr(refused.value).lower(), repr(refused.value)
    # A quorum queue checks its bound before it appends, so it takes at most one message past it.
    assert 3 <= accepted <= 4
    depth = await (await bus.admin_channel()).declare_queue(bus.names.queue("inventory.checkout"), passive=True)
    assert depth.declaration_result.message_count == accepted


async def test_a_command_no_queue_takes_is_refused_not_dropped(bus: Bus) -> None:
    requester = Requester(bus)
    with pytest.raises(Exception) as refused:  # no inventory queue declared under this prefix
        await requester.request(checkout(), CheckoutRequested, timeout=2)
    assert "return" in repr(refused.value).lower() or "route" in repr(refused.value).lower(), repr(refused.value)
