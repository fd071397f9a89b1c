"""HTTP bodies of the gateway (what /openapi.json documents)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.messages import MAX_TICKETS_PER_ORDER, EventStatus, OrderStatus, PricedLine

# Bounds shared by bodies and query parameters: the largest price inventory stores (well inside BIGINT), and the
# instants every component can convert (Python's datetime ends in year 9999; at its edges a timezone shift
# overflows).
MAX_PRICE = 1_000_000_000_000
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, tzinfo=UTC)
# No control characters in names (they end up in email headers and logs); a description may have line breaks.
LINE = r"^[^\x00-\x1f\x7f]*$"
TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def check_instant(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} needs a timezone offset")
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"{name} must lie between {EARLIEST.date()} and {LATEST.date()}")
    return value


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckoutItem(Body):
    ticket_type_id: UUID
    quantity: int = Field(ge=1, le=MAX_TICKETS_PER_ORDER)


class CheckoutIn(Body):
    items: list[CheckoutItem] = Field(min_length=1, max_length=MAX_TICKETS_PER_ORDER)

    @field_validator("items")
    @classmethod
    def _distinct(cls, items: list[CheckoutItem]) -> list[CheckoutItem]:
        ids = [i.ticket_type_id for i in items]
        if len(ids) != len(set(ids)):
            raise ValueError("each ticket type may appear once")
        if sum(i.quantity for i in items) > MAX_TICKETS_PER_ORDER:
            raise ValueError(f"at most {MAX_TICKETS_PER_ORDER} tickets per order")
        return items


class OrderOut(BaseModel):
    order_id: UUID
    status: OrderStatus
    total: int = Field(description="integer VND")
    currency: str = "VND"
    items: list[PricedLine]
    expires_at: datetime | None = None
    reason: str | None = None
    detail: str | None = None
    created_at: datetime | None = None
    payment_url: str | None = None


class TicketTypeIn(Body):
    name: str = Field(min_length=1, max_length=200, pattern=LINE)
    price: int = Field(ge=0, le=MAX_PRICE, description="integer VND")
    capacity: int = Field(ge=0, le=10_000_000)
    per_user_limit: int = Field(10, ge=1, le=10_000)


class EventIn(Body):
    title: str = Field(min_length=1, max_length=300, pattern=LINE)
    venue: str = Field(min_length=1, max_length=300, pattern=LINE)
    city: str = Field(min_length=1, max_length=100, pattern=LINE)
    starts_at: datetime
    description: str = Field("", max_length=10_000, pattern=TEXT)
    hold_seconds: int = Field(900, ge=1, le=86_400, description="how long an unpaid hold lasts")
    ticket_types: list[TicketTypeIn] = Field(default_factory=list, max_length=100)

    MAX_TICKET_TYPES: ClassVar[int] = 100

    @field_validator("starts_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return check_instant(value, "starts_at")


class TicketTypeOut(BaseModel):
    ticket_type_id: UUID
    name: str
    price: int
    capacity: int
    per_user_limit: int
    available: int


class EventOut(BaseModel):
    event_id: UUID
    title: str
    venue: str
    city: str
    starts_at: datetime
    description: str
    hold_seconds: int
    ticket_types: list[TicketTypeOut]
    status: EventStatus = Field(EventStatus.ON_SALE, description="ON_SALE, or CANCELLING/CANCELLED by the organiser")


class TicketTypeSummary(BaseModel):
    """Enough of a ticket type to check out from the listing: POST /checkout takes its ``ticket_type_id``."""

    ticket_type_id: UUID
    name: str
    price: int = Field(description="integer VND")
    available: int


class EventSummary(BaseModel):
    event_id: UUID
    title: str
    venue: str
    city: str
    starts_at: datetime
    lowest_price: int | None
    available: int
    ticket_types: list[TicketTypeSummary] = Field(default_factory=list, description="cheapest first")


class AcceptedOut(BaseModel):
    order_id: UUID
    status: OrderStatus = OrderStatus.REQUESTED
    detail: str = "the request is queued; poll GET /orders/{order_id}"
