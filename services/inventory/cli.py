"""`ticketing events cancel|show` and `ticketing orders refund`: the organiser's actions from a terminal.

The commands reach inventory as the gateway does: a command over RabbitMQ and a wait for its typed answer on a
private reply queue; `events show` reads the read_api views. Nothing here writes a table.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import click

from shared import event_reports
from shared.cli import default_actor, request_once
from shared.db import make_engine
from shared.messages import (
    CancelEvent,
    EventCancelAnswered,
    EventCancelOutcome,
    Message,
    RefundAnswered,
    RefundOrder,
    RefundOutcome,
)
from shared.requests import ReplyT
from shared.settings import get_settings

WAIT_SECONDS = 10.0
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


actor_option = click.option("--actor", default=default_actor, show_default="$USER@host", help="Who is acting.")


async def _request(command: Message, reply: type[ReplyT]) -> ReplyT:
    result = await request_once("organiser-cli", command, reply, WAIT_SECONDS)
    if result is None:
        raise click.ClickException(
            "no answer from inventory yet (the command is queued; check `ticketing events show`)"
        )
    return result


async def _event(event_id: UUID) -> dict[str, Any] | None:
    engine = make_engine(get_settings().database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await event_reports.event_admin(conn, event_id)
    finally:
        await engine.dispose()


def _echo(data: dict[str, Any], as_json: bool, line: str) -> None:
    click.echo(json.dumps(data, default=str, indent=2, ensure_ascii=False) if as_json else line)


@click.group("events")
def events_group() -> None:
    """An organiser's events: cancel one, follow its cancellation."""


@events_group.command("cancel")
@click.argument("event_id", type=click.UUID)
@actor_option
@json_option
def events_cancel(event_id: UUID, actor: str, as_json: bool) -> None:
    """Stop selling the event at once; cancel its holds and refund its sales (in batches)."""
    answered = asyncio.run(_request(CancelEvent(event_id=event_id, actor=f"cli:{actor}"), EventCancelAnswered))
    if answered.outcome is EventCancelOutcome.NOT_FOUND:
        raise click.ClickException(f"404 not found: no event {event_id}")
    progress = answered.progress.model_dump(mode="json") if answered.progress else {}
    _echo(
        {"event_id": str(event_id), "outcome": answered.outcome.value, "progress": progress},
        as_json,
        f"{answered.outcome.value}: event {event_id} is {progress.get('status', '?')}; "
        f"follow it with `ticketing events show {event_id}`",
    )


@events_group.command("show")
@click.argument("event_id", type=click.UUID)
@json_option
def events_show(event_id: UUID, as_json: bool) -> None:
    """The event's status and what its cancellation still has to do."""
    found = asyncio.run(_event(event_id))
    if found is None:
        raise click.ClickException(f"404 not found: no event {event_id}")
    p = found["progress"]
    _echo(
        found,
        as_json,
        f"{found['title']} ({found['status']}): {p['pending_to_cancel']} pending to cancel, "
        f"{p['paid_to_refund']} paid to refund, {p['refunds_pending']} refunds pending, {p['done']} done",
    )


@click.group("orders")
def orders_group() -> None:
    """Orders: an organiser's refund."""


@orders_group.command("refund")
@click.argument("order_id", type=click.UUID)
@actor_option
@json_option
def orders_refund(order_id: UUID, actor: str, as_json: bool) -> None:
    """Refund a PAID order in full (its tickets become void, its stock returns to sale)."""
    answered = asyncio.run(_request(RefundOrder(order_id=order_id, actor=f"cli:{actor}"), RefundAnswered))
    if answered.outcome is RefundOutcome.NOT_FOUND:
        raise click.ClickException(f"404 not found: no order {order_id}")
    status = answered.order.status.value if answered.order else "?"
    if answered.outcome is RefundOutcome.NOT_PAID:
        raise click.ClickException(f"409 order_not_paid: order {order_id} is {status}; only a PAID order is refunded")
    _echo(
        {"order_id": str(order_id), "outcome": answered.outcome.value, "status": status},
        as_json,
        f"{answered.outcome.value}: order {order_id} is {status}",
    )
