"""HTTP bodies of the buyer's ticket routes and the door's check-in routes (what /openapi.json documents)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from services.gateway.schemas import Body, OrderOut
from shared.messages import TICKET_CODE_MAX

# GET /orders: how many orders a page may hold.
ORDERS_PAGE_DEFAULT = 20
ORDERS_PAGE_MAX = 100
# GET /admin/events/{id}/checkins: how many of the latest admissions it lists.
LATEST_ADMISSIONS = 50


class OrdersPage(BaseModel):
    items: list[OrderOut] = Field(description="the caller's orders, newest first, each as GET /orders/{order_id}")
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page; null on the last page")


class TicketOut(BaseModel):
    ticket_id: UUID
    ticket_type_id: UUID
    code: str = Field(description="what the door scans (the QR image encodes it); the same as in the ticket email")
    qr_svg: str = Field(description="the QR image of the code, an SVG document")


class TicketsOut(BaseModel):
    tickets: list[TicketOut]


class ResendOut(BaseModel):
    order_id: UUID
    kind: str = Field(description="the email that is sent again: paid (the tickets), expired or refunded")
    detail: str = "the email is on its way"


class CheckInIn(Body):
    code: str = Field(min_length=1, max_length=TICKET_CODE_MAX, description="the ticket's code, as scanned")


class AdmittedOut(BaseModel):
    ticket_id: UUID
    ticket_type_id: UUID
    admitted_at: datetime


class TypeCheckins(BaseModel):
    ticket_type_id: UUID
    name: str
    issued: int
    admitted: int


class CheckinsOut(BaseModel):
    event_id: UUID
    ticket_types: list[TypeCheckins]
    latest: list[AdmittedOut] = Field(description=f"the latest {LATEST_ADMISSIONS} admissions, newest first")
