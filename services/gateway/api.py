"""The gateway's HTTP routes: thin translations between HTTP and the services' commands and views."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from services.gateway import commands, payments_api, ratelimit, reads, search_api
from services.gateway.auth import AdminUser, CurrentUser, User
from services.gateway.edge import EdgeRoute
from services.gateway.problems import PROBLEM_JSON, Problem
from services.gateway.ratelimit import RateLimit
from services.gateway.schemas import (
    AcceptedOut,
    CheckoutIn,
    EventIn,
    EventOut,
    EventSummary,
    OrderOut,
    TicketTypeIn,
    TicketTypeOut,
)
from shared.messages import (
    AddTicketType,
    CancelAnswered,
    CancelOrder,
    CancelOutcome,
    CatalogChanged,
    CatalogOutcome,
    CheckoutDecided,
    CheckoutOutcome,
    CheckoutRequested,
    CreateEvent,
    Message,
    NewTicketType,
    OrderLine,
    OrderStatus,
    OrderView,
    RejectReason,
)
from shared.requests import ReplyT

router = APIRouter(route_class=EdgeRoute)
MAX_IDEMPOTENCY_KEY = 200
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1d8f3e-2c1b-4d8e-9a53-6c0a3f2b9e11")
_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
REJECTION_TITLES = {
    "sold_out": "Sold out",
    "sales_closed": "Sales closed",
    "limit_exceeded": "Per-buyer limit exceeded",
    "unknown_ticket_type": "Unknown ticket type",
    "invalid_order": "Invalid order",
    "event_cancelled": "Event cancelled",
}


def _state(request: Request) -> Any:
    return request.app.state


def order_out(view: OrderView, payment_url: str | None = None) -> OrderOut:
    return OrderOut(
        order_id=view.order_id,
        status=view.status,
        total=view.total,
        items=view.items,
        expires_at=view.expires_at,
        reason=view.reason,
        detail=view.detail,
        created_at=view.created_at,
        payment_url=payment_url,
    )


def request_hash(body: CheckoutIn) -> str:
    canonical = sorted((str(i.ticket_type_id), i.quantity) for i in body.items)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def rejection_status(reason: str) -> int:
    """409 when the stock or the sale is gone (trying again will not help), 422 for the buyer's input."""
    return 409 if reason in (RejectReason.SOLD_OUT, RejectReason.SALES_CLOSED, RejectReason.EVENT_CANCELLED) else 422


async def _order_response(request: Request, view: OrderView, just_held: bool = False) -> Response:
    """The order as the buyer sees it: 201 while held, 200 otherwise; a rejection as its problem."""
    if view.status is OrderStatus.REJECTED:
        reason = view.reason or "invalid_order"
        raise Problem(
            rejection_status(reason),
            REJECTION_TITLES.get(reason, "Rejected"),
            view.detail or reason,
            reason.replace("_", "-"),
            order_id=str(view.order_id),
            reason=reason,
        )
    status = 201 if view.status is OrderStatus.PENDING else 200
    payment_url = await payments_api.payment_url_for(request, view, just_held=just_held)
    # Serialised by pydantic in one step (the same compact JSON as JSONResponse, without the dict in between).
    return Response(order_out(view, payment_url).model_dump_json(), status_code=status, media_type="application/json")


async def _command(request: Request, command: Message, reply: type[ReplyT]) -> ReplyT | None:
    settings = _state(request).settings
    return await commands.ask(
        _state(request), command, reply, settings.checkout_wait_seconds, settings.checkout_retry_after_seconds
    )


@router.post(
    "/checkout",
    status_code=201,
    response_model=OrderOut,
    responses={
        200: {"model": OrderOut},
        202: {"model": AcceptedOut},
        409: _PROBLEM,
        422: _PROBLEM,
        429: _PROBLEM,
        503: _PROBLEM,
    },
    tags=["orders"],
    summary="Hold tickets for the buyer (all items or none)",
    dependencies=[Depends(RateLimit(ratelimit.CHECKOUT))],
)
async def checkout(
    body: CheckoutIn,
    request: Request,
    user: CurrentUser,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> Response:
    # Documents the route (and serves it where the fast path is not installed): in the gateway, POST /checkout
    # is answered by fastpath.CheckoutFastPath, with the same checks, before FastAPI's routing.
    return await place_checkout(request, body, user, idempotency_key)


async def place_checkout(request: Request, body: CheckoutIn, user: User, idempotency_key: str | None) -> Response:
    """The checkout of an authenticated, rate-limited buyer whose body is valid: held (201), the same order
    again (200 under a repeated Idempotency-Key), a rejection as its problem, or 202 while still queued."""
    state = _state(request)
    digest = request_hash(body)
    if idempotency_key:
        order_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{user.id}\x00{idempotency_key}")
        found = await reads.get_order(state.engine, order_id)
        if found is not None:
            view, previous_hash = found
            if previous_hash != digest:
                raise _key_reused(order_id)
            return await _order_response(request, view)
    else:
        order_id = uuid.uuid4()
    gone = state.sold_out.closed_for(i.ticket_type_id for i in body.items)
    if gone is not None:  # inventory said it has none left: refuse without the round trip (soldout.py)
        raise Problem(
            409, REJECTION_TITLES["sold_out"], "sold out", "sold-out", reason="sold_out", ticket_type_id=str(gone)
        )
    cmd = CheckoutRequested(
        order_id=order_id,
        user_id=user.id,
        user_email=user.email,
        locale=user.locale,
        items=[OrderLine(ticket_type_id=i.ticket_type_id, quantity=i.quantity) for i in body.items],
        request_hash=digest,
    )
    decided = await _command(request, cmd, CheckoutDecided)
    if decided is not None and decided.created:  # an order decided before says nothing of the stock now
        state.sold_out.answered((i.ticket_type_id for i in body.items), decided.sold_out_at())
    if decided is None:
        await _remember_requested(request, order_id, user)
        return JSONResponse(
            AcceptedOut(order_id=order_id).model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/orders/{order_id}"},
        )
    if decided.outcome is CheckoutOutcome.KEY_REUSED:  # a race the lookup above could not see
        raise _key_reused(order_id)
    return await _order_response(request, decided.order, just_held=decided.created)


def _key_reused(order_id: UUID) -> Problem:
    return Problem(
        422,
        "Idempotency-Key reuse",
        "this Idempotency-Key was used with a different request",
        "idempotency-key-reuse",
        order_id=str(order_id),
    )


async def _remember_requested(request: Request, order_id: UUID, user: User) -> None:
    """Let the buyer see REQUESTED while the decision is still queued (best effort)."""
    state = _state(request)
    with contextlib.suppress(Exception):
        await state.redis.set(state.names.redis_key("order-requested", str(order_id)), user.id, ex=3600)


_ORDERS_LIMIT = [Depends(RateLimit(ratelimit.ORDERS))]
_CATALOG_LIMIT = [Depends(RateLimit(ratelimit.CATALOG))]


@router.get(
    "/orders/{order_id}",
    response_model=OrderOut,
    responses={404: _PROBLEM, 429: _PROBLEM},
    tags=["orders"],
    dependencies=_ORDERS_LIMIT,
)
async def get_order(order_id: UUID, request: Request, user: CurrentUser) -> Response:
    state = _state(request)
    found = await reads.get_order(state.engine, order_id)
    if found is not None:
        view, _ = found
        if view.user_id == user.id or user.is_admin:
            payment_url = await payments_api.payment_url_for(request, view)
            return JSONResponse(order_out(view, payment_url).model_dump(mode="json"))
        raise Problem(404, "Not found", "no such order", "not-found")
    try:
        owner = await state.redis.get(state.names.redis_key("order-requested", str(order_id)))
    except Exception:
        owner = None
    if owner is not None and (owner.decode() == user.id or user.is_admin):
        return JSONResponse(AcceptedOut(order_id=order_id).model_dump(mode="json"))
    raise Problem(404, "Not found", "no such order", "not-found")


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderOut,
    responses={202: {"model": AcceptedOut}, 404: _PROBLEM, 409: _PROBLEM, 429: _PROBLEM},
    tags=["orders"],
    dependencies=_ORDERS_LIMIT,
)
async def cancel_order(order_id: UUID, request: Request, user: CurrentUser) -> Response:
    cmd = CancelOrder(order_id=order_id, user_id=user.id, is_admin=user.is_admin)
    answered = await _command(request, cmd, CancelAnswered)
    if answered is None:
        return JSONResponse(
            AcceptedOut(order_id=order_id, detail="cancel queued").model_dump(mode="json"), status_code=202
        )
    if answered.outcome is CancelOutcome.NOT_FOUND:
        raise Problem(404, "Cannot cancel", "order not found", "not-found")
    assert answered.order is not None
    if answered.outcome is CancelOutcome.NOT_PENDING:
        raise Problem(
            409,
            "Cannot cancel",
            f"order is {answered.order.status.value}; only a PENDING order can be cancelled",
            "conflict",
        )
    return JSONResponse(order_out(answered.order).model_dump(mode="json"))


# --- catalog ---------------------------------------------------------------------------------------


@router.get(
    "/events",
    response_model=list[EventSummary],
    responses={429: _PROBLEM, 503: _PROBLEM},
    tags=["catalog"],
    dependencies=_CATALOG_LIMIT,
)
async def list_events(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
) -> list[EventSummary]:
    # Written through: the search index's upcoming-events order is updated on every catalog change.
    docs = await search_api.upcoming(request, offset, limit)
    # Each event's ticket types (id, name, price, available), so a buyer can check out from the listing: one
    # indexed query per page on the read_api view (the index keeps no prices per ticket type).
    types = await reads.ticket_type_summaries(_state(request).engine, [UUID(d.event_id) for d in docs])
    return [
        EventSummary(
            event_id=UUID(d.event_id),
            title=d.title,
            venue=d.venue,
            city=d.city,
            starts_at=d.starts_at,
            lowest_price=d.lowest_price,
            available=d.available,
            ticket_types=types.get(UUID(d.event_id), []),
        )
        for d in docs
    ]


@router.get(
    "/events/{event_id}",
    response_model=EventOut,
    responses={404: _PROBLEM, 429: _PROBLEM},
    tags=["catalog"],
    dependencies=_CATALOG_LIMIT,
)
async def get_event(event_id: UUID, request: Request) -> EventOut:
    # Cache-aside (TTL, invalidated on change, one rebuild at a time); availability from the brief cache.
    engine = _state(request).engine

    async def load() -> dict[str, Any] | None:
        event = await reads.get_event(engine, event_id)
        return event.model_dump(mode="json") if event else None

    async def load_availability() -> dict[str, int]:
        return await search_api.availability(request, event_id)

    data = await search_api.event_cache(request).get_event(str(event_id), load, load_availability)
    if data is None:
        raise Problem(404, "Not found", "no such event", "not-found")
    return EventOut.model_validate(data)


def _new_ticket_type(t: TicketTypeIn, ticket_type_id: UUID | None = None) -> NewTicketType:
    return NewTicketType(
        ticket_type_id=ticket_type_id or uuid.uuid4(),
        name=t.name,
        price=t.price,
        capacity=t.capacity,
        per_user_limit=t.per_user_limit,
    )


def _keyed_ticket_type_id(event_id: UUID, index: int) -> UUID:
    # Under an Idempotency-Key the ticket types get ids derived from the event's, so that a repeat of the
    # request can be told from a different request under the same key by what was stored.
    return uuid.uuid5(event_id, f"ticket-type\x00{index}")


def _same_event(stored: EventOut, body: EventIn) -> bool:
    """Whether ``stored`` is what ``body`` created (ticket types added later by their own route are ignored)."""
    keyed = {_keyed_ticket_type_id(stored.event_id, i): t for i, t in enumerate(body.ticket_types)}
    any_keyed = {_keyed_ticket_type_id(stored.event_id, i) for i in range(EventIn.MAX_TICKET_TYPES)}
    created = {t.ticket_type_id: t for t in stored.ticket_types if t.ticket_type_id in any_keyed}
    if (stored.title, stored.venue, stored.city, stored.starts_at, stored.description, stored.hold_seconds) != (
        body.title,
        body.venue,
        body.city,
        body.starts_at,
        body.description,
        body.hold_seconds,
    ):
        return False
    return created.keys() == keyed.keys() and all(
        (c.name, c.price, c.capacity, c.per_user_limit) == (b.name, b.price, b.capacity, b.per_user_limit)
        for tid, b in keyed.items()
        for c in [created[tid]]
    )


@router.post(
    "/admin/events",
    status_code=201,
    response_model=search_api.EventWritten,
    responses={401: _PROBLEM, 403: _PROBLEM, 422: _PROBLEM, 503: _PROBLEM},
    tags=["admin"],
)
async def create_event(
    body: EventIn,
    request: Request,
    admin: AdminUser,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> Response:
    if idempotency_key:
        event_id = uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"event\x00{admin.id}\x00{idempotency_key}")
        types = [_new_ticket_type(t, _keyed_ticket_type_id(event_id, i)) for i, t in enumerate(body.ticket_types)]
    else:
        event_id = uuid.uuid4()
        types = [_new_ticket_type(t) for t in body.ticket_types]
    cmd = CreateEvent(
        event_id=event_id,
        title=body.title,
        venue=body.venue,
        city=body.city,
        starts_at=body.starts_at,
        description=body.description,
        hold_seconds=body.hold_seconds,
        ticket_types=types,
    )
    changed = await _command(request, cmd, CatalogChanged)
    if idempotency_key and changed is not None and changed.outcome is not CatalogOutcome.EVENT_NOT_FOUND:
        # Checked after the command, not before: two racing requests under one key both see the winner here.
        stored = await reads.get_event(_state(request).engine, event_id)
        if stored is not None and not _same_event(stored, body):
            raise Problem(
                422,
                "Idempotency-Key reuse",
                "this Idempotency-Key was used with a different request",
                "idempotency-key-reuse",
                event_id=str(event_id),
            )
    return await _catalog_response(request, changed, event_id)


@router.post(
    "/admin/events/{event_id}/ticket-types",
    status_code=201,
    response_model=search_api.TicketTypeWritten,
    responses={401: _PROBLEM, 403: _PROBLEM, 404: _PROBLEM, 503: _PROBLEM},
    tags=["admin"],
)
async def add_ticket_type(event_id: UUID, body: TicketTypeIn, request: Request, admin: AdminUser) -> Response:
    new = _new_ticket_type(body)
    cmd = AddTicketType(event_id=event_id, ticket_type=new)
    changed = await _command(request, cmd, CatalogChanged)
    if changed is not None and changed.outcome is CatalogOutcome.CREATED:
        out = TicketTypeOut(
            ticket_type_id=new.ticket_type_id,
            name=new.name,
            price=new.price,
            capacity=new.capacity,
            per_user_limit=new.per_user_limit,
            available=new.capacity,
        )
        return await search_api.after_catalog_change(request, event_id, out.model_dump(mode="json"), 201)
    return await _catalog_response(request, changed, event_id)


async def _catalog_response(request: Request, changed: CatalogChanged | None, event_id: UUID) -> Response:
    if changed is None:
        raise Problem(
            504, "Timed out", "the catalog change is queued but not confirmed yet", "timeout", event_id=str(event_id)
        )
    if changed.outcome is CatalogOutcome.EVENT_NOT_FOUND:
        raise Problem(404, "Refused", "event not found", "not-found")
    event = await reads.get_event(_state(request).engine, event_id)
    assert event is not None
    status = 201 if changed.outcome is CatalogOutcome.CREATED else 200
    return await search_api.after_catalog_change(request, event_id, event.model_dump(mode="json"), status)
