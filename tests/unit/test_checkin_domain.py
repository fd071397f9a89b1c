"""The door's rule (pure): a presented ticket is admitted once, refused when its order is no longer PAID, and a
code of another event says only that. Plus the buyer's cursor and the email a status stands for."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from services.gateway.tickets_api import decode_cursor, encode_cursor
from services.inventory.domain import TicketAtDoor, admission
from shared.messages import CheckInOutcome, OrderStatus, OrderView
from shared.order_emails import email_kind

EVENT = uuid.uuid4()
EARLIER = datetime(2030, 1, 1, 19, 30, tzinfo=UTC)


def ticket(
    status: OrderStatus = OrderStatus.PAID, admitted_at: datetime | None = None, event_id: uuid.UUID = EVENT
) -> TicketAtDoor:
    return TicketAtDoor(
        ticket_id=uuid.uuid4(),
        ticket_type_id=uuid.uuid4(),
        event_id=event_id,
        order_status=status,
        admitted_at=admitted_at,
    )


def test_a_paid_ticket_not_yet_admitted_is_admitted() -> None:
    assert admission(ticket(), EVENT) is CheckInOutcome.ADMITTED


def test_an_admitted_ticket_is_refused_as_already_admitted() -> None:
    assert admission(ticket(admitted_at=EARLIER), EVENT) is CheckInOutcome.ALREADY_ADMITTED


@pytest.mark.parametrize(
    "status", [OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED, OrderStatus.CANCELLED, OrderStatus.EXPIRED]
)
def test_a_ticket_of_an_order_that_is_not_paid_any_more_is_void(status: OrderStatus) -> None:
    assert admission(ticket(status), EVENT) is CheckInOutcome.VOID
    # Void wins over an earlier admission: a refunded holder may not come back in.
    assert admission(ticket(status, admitted_at=EARLIER), EVENT) is CheckInOutcome.VOID


def test_a_code_of_another_event_is_the_wrong_event_whatever_its_order() -> None:
    assert admission(ticket(event_id=uuid.uuid4()), EVENT) is CheckInOutcome.WRONG_EVENT
    assert admission(ticket(OrderStatus.REFUNDED, event_id=uuid.uuid4()), EVENT) is CheckInOutcome.WRONG_EVENT


def test_an_unknown_code_is_not_found() -> None:
    assert admission(None, EVENT) is CheckInOutcome.NOT_FOUND


def test_the_orders_cursor_round_trips_and_anything_else_is_refused() -> None:
    view = OrderView(order_id=uuid.uuid4(), user_id="u", status=OrderStatus.PAID, total=0, items=[], created_at=EARLIER)
    cursor = encode_cursor(view)
    assert decode_cursor(cursor) == (EARLIER, view.order_id)
    far_off = base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+14:00","%s"]' % str(view.order_id).encode()).decode()
    naive = base64.urlsafe_b64encode(b'["2030-01-01T00:00:00","%s"]' % str(view.order_id).encode()).decode()
    numbers = base64.urlsafe_b64encode(b'["2030-01-01T00:00:00+00:00", 5]').decode()
    for bad in ["", "x", "!!!!", "bm90IGpzb24", "WyJ4IiwieSJd", "WzEsMl0", "eyJhIjoxfQ", far_off, naive, numbers]:
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_which_status_has_an_email_to_resend() -> None:
    assert email_kind(OrderStatus.PAID) == "paid"
    assert email_kind(OrderStatus.EXPIRED) == "expired"
    assert email_kind(OrderStatus.REFUNDED) == "refunded"
    for status in (OrderStatus.PENDING, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.REFUND_PENDING):
        assert email_kind(status) is None
