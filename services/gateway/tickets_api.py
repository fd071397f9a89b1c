"""The buyer's routes: their orders page by page, an order's tickets (codes and QR images), and the
order's email sent again. Reads go through the read_api views; a resend is a message to the mailer."""

from __future__ import annotations

import base64
import binascii
import io
import json
import uuid
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import segno
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from services.gateway import payments_api, ratelimit, reads, ticket_reads
from services.gateway.api import order_out
from services.gateway.auth import CurrentUser, User
from services.gateway.edge import EdgeRoute
from services.gateway.problems import PROBLEM_JSON, Problem
from services.gateway.ratelimit import RateLimit
from services.gateway.schemas import check_instant
from services.gateway.ticket_schemas import (
    ORDERS_PAGE_DEFAULT,
    ORDERS_PAGE_MAX,
    OrdersPage,
    ResendOut,
    TicketOut,
    TicketsOut,
)
from shared import envelopes
from shared.messages import OrderStatus, OrderView, ResendEmail
from shared.order_emails import email_kind

router = APIRouter(route_class=EdgeRoute, tags=["orders"])
_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
_LIMITED = [Depends(RateLimit(ratelimit.ORDERS))]
# A resend reaches the buyer's inbox (and costs an SMTP send): a few per order and hour, counted from the first.
RESEND_LIMIT = 3
RESEND_WINDOW_SECONDS = 3600
MAX_CURSOR = 200


# --- the opaque cursor: the keyset (created_at, id) of the last order of a page ----------------------------------


def encode_cursor(view: OrderView) -> str:
    assert view.created_at is not None
    raw = json.dumps([view.created_at.isoformat(), str(view.order_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The keyset a cursor of ``encode_cursor`` carries; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, order_id = json.loads(raw)
        if not isinstance(created, str) or not isinstance(order_id, str):
            raise TypeError("a cursor holds two strings")
        # Within the instants every component converts (a far-off one would overflow in the driver).
        return check_instant(datetime.fromisoformat(created), "cursor"), UUID(order_id)
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise ValueError("not a cursor this API handed out") from exc


def _invalid_cursor() -> Problem:
    return Problem(
        422,
        "Invalid cursor",
        "the cursor is not one this API handed out; start again without one",
        "invalid-request",
        errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}],
    )


@router.get(
    "/orders",
    response_model=OrdersPage,
    responses={422: _PROBLEM, 429: _PROBLEM},
    summary="The caller's orders, newest first, a page at a time",
    dependencies=_LIMITED,
)
async def list_orders(
    request: Request,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=ORDERS_PAGE_MAX)] = ORDERS_PAGE_DEFAULT,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> Response:
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError:
        raise _invalid_cursor() from None
    views = await ticket_reads.orders_of(request.app.state.engine, user.id, limit + 1, after)
    page, more = views[:limit], len(views) > limit
    urls = await payments_api.payment_urls_for(request, page)
    items = [order_out(v, urls.get(v.order_id)) for v in page]
    body = OrdersPage(items=items, next_cursor=encode_cursor(page[-1]) if more and page else None)
    return JSONResponse(body.model_dump(mode="json"))


async def _own_order(request: Request, order_id: UUID, user: User) -> OrderView:
    """The caller's order; 404 for any other (whether it exists is nobody else's business)."""
    found = await reads.get_order(request.app.state.engine, order_id)
    if found is None or found[0].user_id != user.id:
        raise Problem(404, "Not found", "no such order", "not-found")
    return found[0]


def qr_svg(code: str) -> str:
    """The ticket's QR image as an SVG document: the same code, symbol and error level as the email's PNG."""
    buf = io.BytesIO()
    segno.make(code, error="m").save(buf, kind="svg", scale=5, border=2, xmldecl=False)
    return buf.getvalue().decode()


@router.get(
    "/orders/{order_id}/tickets",
    response_model=TicketsOut,
    responses={404: _PROBLEM, 409: _PROBLEM, 429: _PROBLEM},
    summary="A paid order's tickets: their codes and QR images",
    dependencies=_LIMITED,
)
async def order_tickets(order_id: UUID, request: Request, user: CurrentUser) -> Response:
    view = await _own_order(request, order_id, user)
    if view.status is not OrderStatus.PAID:
        raise Problem(
            409,
            "Order not paid",
            f"the order is {view.status.value}: only a PAID order has tickets",
            "order_not_paid",
            order_status=view.status.value,
        )
    rows = await ticket_reads.tickets_of(request.app.state.engine, order_id)
    tickets = [
        TicketOut(ticket_id=r.ticket_id, ticket_type_id=r.ticket_type_id, code=r.code, qr_svg=qr_svg(r.code))
        for r in rows
    ]
    return JSONResponse(TicketsOut(tickets=tickets).model_dump(mode="json"))


@router.post(
    "/orders/{order_id}/resend-email",
    status_code=202,
    response_model=ResendOut,
    responses={404: _PROBLEM, 409: _PROBLEM, 429: _PROBLEM, 503: _PROBLEM},
    summary="Send the order's current email again (the tickets, if it is paid)",
    dependencies=_LIMITED,
)
async def resend_email(order_id: UUID, request: Request, user: CurrentUser) -> Response:
    state = request.app.state
    view = await _own_order(request, order_id, user)
    kind = email_kind(view.status)
    if kind is None:
        raise Problem(
            409,
            "No email to resend",
            f"the order is {view.status.value}: no email stands for that status",
            "no_email",
            order_status=view.status.value,
        )
    decision = await ratelimit.limiter(request).hit_since_first(
        "resend-email", f"order:{order_id}", RESEND_LIMIT, RESEND_WINDOW_SECONDS
    )
    ratelimit.refuse_unless_allowed(  # uncounted (no Redis, no local table): refuse rather than spam the inbox
        decision,
        f"at most {RESEND_LIMIT} resends of an order's email per {RESEND_WINDOW_SECONDS // 60} minutes",
        "cannot count resends right now; try again shortly",
    )
    cmd = ResendEmail(order_id=order_id, resend_id=uuid.uuid4(), requested_by=f"user:{user.id}")
    try:
        await state.bus.publish_raw(
            cmd.model_dump_json().encode(),
            envelopes.routing_key(cmd),
            message_id=envelopes.message_id(cmd),
            mandatory=True,  # a resend no queue takes must fail here (503), not vanish
            headers={"x-type": type(cmd).__name__},
        )
    except Exception as exc:  # the broker refused or is unreachable: nothing was accepted
        problem = Problem(
            503, "Service unavailable", f"could not queue the resend: {type(exc).__name__}", "unavailable"
        )
        problem.headers["Retry-After"] = str(state.settings.checkout_retry_after_seconds)
        raise problem from exc
    return JSONResponse(ResendOut(order_id=order_id, kind=kind).model_dump(mode="json"), status_code=202)
