"""The organiser's admin routes: refund a paid order, cancel an event and follow its progress, the
sales report and the accounting CSV. Commands go to inventory (request/reply); reports read read_api views."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from services.gateway import commands, csv_export
from services.gateway.auth import AdminUser, User
from services.gateway.edge import EdgeRoute
from services.gateway.problems import PROBLEM_JSON, Problem
from shared import event_reports
from shared.messages import (
    CancelEvent,
    CancellationProgress,
    EventCancelAnswered,
    EventCancelOutcome,
    EventStatus,
    Message,
    OrderStatus,
    RefundAnswered,
    RefundOrder,
    RefundOutcome,
)
from shared.requests import ReplyT

router = APIRouter(prefix="/admin", tags=["organiser"], route_class=EdgeRoute)
_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
WAIT_SECONDS = 10.0  # inventory answers at once; the work after the answer is asynchronous


class RefundOut(BaseModel):
    order_id: UUID
    status: OrderStatus | None = Field(None, description="REFUND_PENDING until the provider confirms, then REFUNDED")
    outcome: str = Field(description="accepted (now), already (a repeat: nothing done twice), or queued")
    detail: str = ""


class EventCancelOut(BaseModel):
    event_id: UUID
    outcome: str = Field(description="accepted (now), already (a repeat), or queued")
    progress: CancellationProgress | None = None


class OrderCounts(BaseModel):
    pending: int
    paid: int
    refund_pending: int
    refunded: int


class ProgressOut(BaseModel):
    pending_to_cancel: int
    paid_to_refund: int
    refunds_pending: int
    done: int
    batches: int


class EventAdminOut(BaseModel):
    event_id: UUID
    title: str
    venue: str
    city: str
    starts_at: datetime
    status: EventStatus
    cancel_requested_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancelled_by: str | None = None
    progress: ProgressOut
    orders: OrderCounts


class SalesLine(BaseModel):
    ticket_type_id: UUID
    name: str
    price: int = Field(description="integer VND")
    capacity: int
    held: int
    sold: int
    available: int
    refunded: int = Field(description="tickets of orders refunded or being refunded")
    admitted: int = Field(description="tickets checked in (not void)")
    revenue: int = Field(description="integer VND of the orders still paid")


class SalesTotals(BaseModel):
    capacity: int
    held: int
    sold: int
    available: int
    refunded: int
    admitted: int
    revenue: int


class SalesOut(BaseModel):
    event_id: UUID
    status: EventStatus
    ticket_types: list[SalesLine]
    totals: SalesTotals


async def _command(request: Request, command: Message, reply: type[ReplyT]) -> ReplyT | None:
    state = request.app.state
    return await commands.ask(state, command, reply, WAIT_SECONDS, state.settings.checkout_retry_after_seconds)


def _actor(user: User) -> str:
    return f"user:{user.id}"


@router.post(
    "/orders/{order_id}/refund",
    status_code=202,
    response_model=RefundOut,
    responses={403: _PROBLEM, 404: _PROBLEM, 409: _PROBLEM, 503: _PROBLEM},
    summary="Refund a PAID order in full (tickets void, stock back on sale, buyer emailed)",
)
async def refund_order(order_id: UUID, request: Request, admin: AdminUser) -> Response:
    answered = await _command(request, RefundOrder(order_id=order_id, actor=_actor(admin)), RefundAnswered)
    if answered is None:  # the command is durable: inventory will apply it
        out = RefundOut(order_id=order_id, outcome="queued", detail="the refund is queued; poll GET /orders/{id}")
        return JSONResponse(out.model_dump(mode="json"), status_code=202)
    if answered.outcome is RefundOutcome.NOT_FOUND:
        raise Problem(404, "Not found", "no such order", "not-found")
    assert answered.order is not None
    if answered.outcome is RefundOutcome.NOT_PAID:
        raise Problem(
            409,
            "Order not paid",
            f"order is {answered.order.status.value}; only a PAID order can be refunded",
            "order-not-paid",
            reason="order_not_paid",
            order_id=str(order_id),
            order_status=answered.order.status.value,
        )
    out = RefundOut(order_id=order_id, status=answered.order.status, outcome=answered.outcome.value)
    return JSONResponse(out.model_dump(mode="json"), status_code=202)


@router.post(
    "/events/{event_id}/cancel",
    status_code=202,
    response_model=EventCancelOut,
    responses={403: _PROBLEM, 404: _PROBLEM, 503: _PROBLEM},
    summary="Cancel an event: stop selling at once, cancel its holds, refund its sales (in batches)",
)
async def cancel_event(event_id: UUID, request: Request, admin: AdminUser) -> Response:
    answered = await _command(request, CancelEvent(event_id=event_id, actor=_actor(admin)), EventCancelAnswered)
    if answered is None:
        out = EventCancelOut(event_id=event_id, outcome="queued")
        return JSONResponse(out.model_dump(mode="json"), status_code=202)
    if answered.outcome is EventCancelOutcome.NOT_FOUND:
        raise Problem(404, "Not found", "no such event", "not-found")
    out = EventCancelOut(event_id=event_id, outcome=answered.outcome.value, progress=answered.progress)
    return JSONResponse(out.model_dump(mode="json"), status_code=202)


@router.get(
    "/events/{event_id}",
    response_model=EventAdminOut,
    responses={403: _PROBLEM, 404: _PROBLEM},
    summary="The event's status and its cancellation's progress (orders still to do)",
)
async def event_admin(event_id: UUID, request: Request, admin: AdminUser) -> EventAdminOut:
    async with request.app.state.engine.connect() as conn:
        found = await event_reports.event_admin(conn, event_id)
    if found is None:
        raise Problem(404, "Not found", "no such event", "not-found")
    return EventAdminOut.model_validate(found)


@router.get(
    "/events/{event_id}/sales",
    response_model=SalesOut,
    responses={403: _PROBLEM, 404: _PROBLEM},
    summary="Sales per ticket type: capacity, held, sold, available, refunded, admitted, revenue (VND)",
)
async def sales(event_id: UUID, request: Request, admin: AdminUser) -> SalesOut:
    async with request.app.state.engine.connect() as conn:
        found = await event_reports.event_admin(conn, event_id)
        if found is None:
            raise Problem(404, "Not found", "no such event", "not-found")
        lines = await event_reports.sales(conn, event_id)
    return SalesOut(
        event_id=event_id,
        status=found["status"],
        ticket_types=[SalesLine.model_validate(line) for line in lines],
        totals=SalesTotals.model_validate(event_reports.totals(lines)),
    )


@router.get(
    "/events/{event_id}/orders.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, 403: _PROBLEM, 404: _PROBLEM},
    summary="Every order line of the event as CSV (UTF-8, header row), for accounting",
)
async def orders_csv(event_id: UUID, request: Request, admin: AdminUser) -> StreamingResponse:
    engine = request.app.state.engine
    async with engine.connect() as conn:
        if await event_reports.event_admin(conn, event_id) is None:
            raise Problem(404, "Not found", "no such event", "not-found")

    async def rows() -> Any:
        async with engine.connect() as conn:
            async for row in event_reports.ledger(conn, event_id):
                yield row

    return StreamingResponse(
        csv_export.stream(event_reports.LEDGER_COLUMNS, rows()),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="orders-{event_id}.csv"'},
    )
