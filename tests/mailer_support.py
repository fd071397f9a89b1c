"""Helpers for the mailer and DLQ tests: publish the order events the mailer consumes, read its tables."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from pydantic import BaseModel

from shared.messages import IssuedTicket, OrderPaid, PricedLine
from tests.harness import Stack


def paid_order(recipient: str, *, locale: str = "vi", tickets: int = 2) -> OrderPaid:
    tt = uuid.uuid4()
    order_id = uuid.uuid4()
    return OrderPaid(
        order_id=order_id,
        user_id="buyer",
        user_email=recipient,
        locale=locale,
        event_id=uuid.uuid4(),
        event_title="Hòa nhạc Mùa Thu",
        venue="Nhà hát Lớn",
        city="Hà Nội",
        starts_at=datetime.now(UTC) + timedelta(days=30),
        items=[PricedLine(ticket_type_id=tt, quantity=tickets, unit_price=250_000)],
        total=250_000 * tickets,
        paid_at=datetime.now(UTC),
        tickets=[
            IssuedTicket(code=f"TK-{order_id.hex[:8].upper()}-{i}", ticket_type_id=tt, ticket_type_name="Hạng A")
            for i in range(tickets)
        ],
    )


def recipient(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


async def publish(
    stack: Stack,
    routing_key: str,
    body: bytes | BaseModel,
    message_id: str,
    *,
    queue: str | None = None,
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish with a confirm to the events exchange (as inventory would), or straight to a queue."""
    data = body.model_dump_json().encode() if isinstance(body, BaseModel) else body
    channel = await stack.amqp.channel(publisher_confirms=True)
    try:
        message = aio_pika.Message(
            data,
            message_id=message_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers or {},
        )
        if queue is None:
            exchange = await channel.get_exchange(stack.names.events_exchange)
            await exchange.publish(message, routing_key=routing_key)
        else:
            await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)
    finally:
        await channel.close()


async def email_row(stack: Stack, order_id: uuid.UUID, kind: str = "paid") -> Any:
    return await stack.db.fetchrow("SELECT * FROM mailer.emails WHERE order_id = $1 AND kind = $2", order_id, kind)


async def dead_letters(stack: Stack, message_id: str, status: str | None = None) -> list[Any]:
    return await stack.db.fetch(
        "SELECT * FROM ops.dead_letters WHERE message_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY id",
        message_id,
        status,
    )


async def cli(stack: Stack, *args: str) -> Any:
    """Run `ticketing ...` as a real process against this run's database and broker; parse its --json output."""
    code, out, err = await stack.run_cli(*args)
    assert code == 0, f"ticketing {' '.join(args)} failed ({code}): {err}"
    return json.loads(out)
