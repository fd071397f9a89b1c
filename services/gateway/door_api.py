"""The door's routes (admin or scanner role): admit a ticket by its code, and an event's check-ins.

A check-in changes inventory's data, so it is a ``command.check_in`` to inventory (request/reply over RabbitMQ),
which decides it under the order's row lock and answers ``CheckInAnswered``; the summary reads the views.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.gateway import commands, ticket_reads
from services.gateway.auth import DoorUser
from services.gateway.edge import EdgeRoute
from services.gateway.problems import PROBLEM_JSON, Problem
from services.gateway.ticket_schemas import (
    LATEST_ADMISSIONS,
    AdmittedOut,
    CheckInIn,
    CheckinsOut,
    TypeCheckins,
)
from shared.messages import CheckIn, CheckInAnswered, CheckInOutcome

router = APIRouter(route_class=EdgeRoute, tags=["door"])
_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
CHECK_IN_WAIT_SECONDS = 10.0


def _problem_for(answer: CheckInAnswered) -> Problem:
    """How a refused admission is told to the door (the outcome's own name is the problem type)."""
    ids = {"ticket_id": str(answer.ticket_id), "ticket_type_id": str(answer.ticket_type_id)}
    match answer.outcome:
        case CheckInOutcome.ALREADY_ADMITTED:
            assert answer.admitted_at is not None
            return Problem(
                409,
                "Already admitted",
                f"this ticket was admitted at {answer.admitted_at.isoformat()}",
                "already_admitted",
                admitted_at=answer.admitted_at.isoformat(),
                **ids,
            )
        case CheckInOutcome.VOID:
            status = answer.order_status.value if answer.order_status else "unknown"
            return Problem(
                409,
                "Ticket void",
                f"the ticket's order is {status}: not valid for entry",
                "ticket_void",
                order_status=status,
                **ids,
            )
        case CheckInOutcome.WRONG_EVENT:
            return Problem(422, "Wrong event", "this ticket is for another event", "wrong_event")
    return Problem(404, "Unknown ticket", "no ticket has this code", "not-found")


@router.post(
    "/admin/events/{event_id}/checkin",
    response_model=AdmittedOut,
    responses={401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM, 409: _PROBLEM, 422: _PROBLEM, 503: _PROBLEM, 504: _PROBLEM},
    summary="Admit a ticket at the event's door, once (admin or scanner)",
)
async def check_in(event_id: UUID, body: CheckInIn, request: Request, user: DoorUser) -> Response:
    state = request.app.state
    cmd = CheckIn(event_id=event_id, code=body.code, actor=f"user:{user.id}")
    answer = await commands.ask(state, cmd, CheckInAnswered, CHECK_IN_WAIT_SECONDS, retry_after=1)
    if answer is None:  # queued and durable: a second scan answers already_admitted if this one went through
        raise Problem(504, "Timed out", "no answer from inventory yet; scan the ticket again", "timeout")
    if answer.outcome is not CheckInOutcome.ADMITTED:
        raise _problem_for(answer)
    assert answer.ticket_id and answer.ticket_type_id and answer.admitted_at
    out = AdmittedOut(ticket_id=answer.ticket_id, ticket_type_id=answer.ticket_type_id, admitted_at=answer.admitted_at)
    return JSONResponse(out.model_dump(mode="json"))


@router.get(
    "/admin/events/{event_id}/checkins",
    response_model=CheckinsOut,
    responses={401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM},
    summary="Admissions per ticket type and the latest ones (admin or scanner)",
)
async def checkins(event_id: UUID, request: Request, user: DoorUser) -> CheckinsOut:
    found = await ticket_reads.checkins(request.app.state.engine, event_id, LATEST_ADMISSIONS)
    if found is None:
        raise Problem(404, "Not found", "no such event", "not-found")
    per_type, latest = found
    return CheckinsOut(
        event_id=event_id,
        ticket_types=[
            TypeCheckins(ticket_type_id=r.ticket_type_id, name=r.name, issued=r.issued, admitted=r.admitted)
            for r in per_type
        ],
        latest=[
            AdmittedOut(ticket_id=r.ticket_id, ticket_type_id=r.ticket_type_id, admitted_at=r.admitted_at)
            for r in latest
        ],
    )
