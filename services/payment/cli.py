"""`ticketing payments ...`: the payment operator actions (reviews held for fraud, refused refunds).

The CLI reaches the payment service as the gateway does: a ``command.payment_op`` over RabbitMQ and a wait for
the answer on a private reply queue. It never writes a payment table; the service audits under --actor.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from shared.cli import default_actor, request_once
from shared.messages import PaymentOp, PaymentOpAction, PaymentOpAnswered, PaymentOpOutcome

console = Console()
WAIT_SECONDS = 20.0  # a reject or retry waits for the provider's refund answer


actor_option = click.option(
    "--actor", default=default_actor, show_default="$USER@host", help="Who is acting (recorded in payment.audit_log)."
)
# Said the way the HTTP API says it, so an operator reads the same words in both.
REFUSALS = {
    PaymentOpOutcome.NOT_FOUND: "404 not found",
    PaymentOpOutcome.WRONG_STATE: "409 conflict",
    PaymentOpOutcome.PROVIDER_FAILED: "502 provider refused",
}
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


async def _request(action: PaymentOpAction, actor: str, target: str = "", limit: int = 100) -> PaymentOpAnswered:
    cmd = PaymentOp(action=action, actor=f"cli:{actor}", target=target, limit=limit)
    result = await request_once("payments-cli", cmd, PaymentOpAnswered, WAIT_SECONDS)
    if result is None:
        raise click.ClickException("no answer from the payment service yet (the command is queued; check `ls`)")
    return result


def _run(action: PaymentOpAction, actor: str, target: str = "", limit: int = 100) -> PaymentOpAnswered:
    result = asyncio.run(_request(action, actor, target, limit))
    if result.outcome is not PaymentOpOutcome.DONE:
        raise click.ClickException(f"{REFUSALS[result.outcome]}: {result.detail}")
    return result


def _emit(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2, ensure_ascii=False))
        return
    table = Table(*columns)
    for r in rows:
        table.add_row(*(str(r.get(c, "") if r.get(c) is not None else "") for c in columns))
    console.print(table)


@click.group("payments")
def payments_group() -> None:
    """Payment operator actions: reviews (VNPAY 07) and refused refunds."""


@payments_group.group("review")
def review_group() -> None:
    """Payments held for review: money taken, order not paid until an operator decides."""


@review_group.command("ls")
@click.option("--limit", default=100, show_default=True)
@actor_option
@json_option
def review_ls(limit: int, actor: str, as_json: bool) -> None:
    """List the attempts held for review."""
    rows = _run(PaymentOpAction.LIST_REVIEW, actor, limit=limit).items or []
    _emit(rows, ["txn_ref", "order_id", "amount", "response_code", "order_status", "expires_at", "held_since"], as_json)


@review_group.command("accept")
@click.argument("txn_ref")
@actor_option
def review_accept(txn_ref: str, actor: str) -> None:
    """Apply the payment as a success (PAID, or refunded if the stock is gone)."""
    click.echo(_run(PaymentOpAction.ACCEPT, actor, txn_ref).detail)


@review_group.command("reject")
@click.argument("txn_ref")
@actor_option
def review_reject(txn_ref: str, actor: str) -> None:
    """Refund the payment in full; the order's hold expires as usual."""
    click.echo(_run(PaymentOpAction.REJECT, actor, txn_ref).detail)


@payments_group.group("refunds")
def refunds_group() -> None:
    """Refunds the provider refused or that failed."""


@refunds_group.command("ls")
@click.option("--limit", default=100, show_default=True)
@actor_option
@json_option
def refunds_ls(limit: int, actor: str, as_json: bool) -> None:
    """List failed or refused refunds."""
    rows = _run(PaymentOpAction.LIST_FAILED_REFUNDS, actor, limit=limit).items or []
    _emit(rows, ["kind", "txn_ref", "order_id", "amount", "status", "tries", "reason", "detail"], as_json)


@refunds_group.command("retry")
@click.argument("txn_ref")
@actor_option
def refunds_retry(txn_ref: str, actor: str) -> None:
    """Ask the provider for the refund again."""
    click.echo(_run(PaymentOpAction.RETRY_REFUND, actor, txn_ref).detail)
