"""`ticketing checkin CODE --event EVENT_ID`: admit a ticket at the door from a terminal.

Like the gateway's check-in route, the CLI sends ``command.check_in`` to inventory over RabbitMQ and waits for
its answer on a private reply queue; it never writes a table itself. Exit 0 when admitted; otherwise one line
saying why (the HTTP API's words) and exit 1.
"""

from __future__ import annotations

import asyncio
import sys
from uuid import UUID

import click

from shared.cli import default_actor, request_once
from shared.messages import CheckIn, CheckInAnswered, CheckInOutcome

WAIT_SECONDS = 10.0
# Said the way the HTTP API says it, so door staff read the same words in both.
REFUSALS = {
    CheckInOutcome.ALREADY_ADMITTED: "409 already_admitted",
    CheckInOutcome.VOID: "409 ticket_void",
    CheckInOutcome.WRONG_EVENT: "422 wrong_event: this ticket is for another event",
    CheckInOutcome.NOT_FOUND: "404 not found: no ticket has this code",
}


async def _check_in(cmd: CheckIn) -> CheckInAnswered | None:
    return await request_once("checkin-cli", cmd, CheckInAnswered, WAIT_SECONDS)


def refusal(answer: CheckInAnswered) -> str:
    line = REFUSALS[answer.outcome]
    if answer.outcome is CheckInOutcome.ALREADY_ADMITTED and answer.admitted_at is not None:
        line += f": admitted at {answer.admitted_at.isoformat()}"
    if answer.outcome is CheckInOutcome.VOID and answer.order_status is not None:
        line += f": the ticket's order is {answer.order_status.value}"
    return line


@click.command("checkin")
@click.argument("code")
@click.option("--event", "event_id", required=True, type=click.UUID, help="The event whose door this is.")
@click.option("--actor", default=default_actor, show_default="$USER@host", help="Who scans (kept with the ticket).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def checkin(code: str, event_id: UUID, actor: str, as_json: bool) -> None:
    """Admit the ticket with CODE at EVENT's door (once; a second scan says when it was admitted)."""
    if not 0 < len(code) <= 200:
        raise click.BadParameter("a ticket code has 1 to 200 characters", param_hint="CODE")
    answer = asyncio.run(_check_in(CheckIn(event_id=event_id, code=code, actor=f"cli:{actor}")))
    if answer is None:
        raise click.ClickException("no answer from inventory yet (the check-in is queued; scan again to see it)")
    if as_json:
        click.echo(answer.model_dump_json(exclude_none=True))
    elif answer.outcome is CheckInOutcome.ADMITTED:
        assert answer.admitted_at is not None
        click.echo(f"admitted: ticket {answer.ticket_id} ({answer.ticket_type_id}) at {answer.admitted_at.isoformat()}")
    if answer.outcome is not CheckInOutcome.ADMITTED:
        if not as_json:
            click.echo(f"Error: {refusal(answer)}", err=True)
        sys.exit(1)
