"""Pure parts of the organiser's reports and emails: the CSV's formula guard, the cancellation emails."""

from __future__ import annotations

import uuid

from services.gateway import csv_export
from services.mailer import domain
from services.mailer.domain import Kind
from services.mailer.render import render
from shared.messages import OrderCancelled, OrderRefunded, OrderStatus, PricedLine, RefundCause, ReleaseCause


def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_defused() -> None:
    for dangerous in ("=1+1", "+49 123", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert csv_export.cell(dangerous) == "'" + dangerous
    assert csv_export.cell("Nguyễn Thị Ánh") == "Nguyễn Thị Ánh"
    assert csv_export.cell(-5) == "-5" and csv_export.cell(None) == "" and csv_export.cell(120_000) == "120000"
    assert csv_export.line(["a,b", 'say "hi"', "=x"]) == '"a,b","say ""hi""",\'=x\r\n'


def released(cause: ReleaseCause) -> OrderCancelled:
    return OrderCancelled(
        order_id=uuid.uuid4(),
        user_id="lan",
        user_email="lan@example.com",
        status=OrderStatus.CANCELLED,
        items=[PricedLine(ticket_type_id=uuid.uuid4(), quantity=2, unit_price=150_000)],
        cause=cause,
    )


def test_only_a_hold_released_by_the_events_cancellation_is_emailed() -> None:
    assert not domain.emails_cancel(released(ReleaseCause.BUYER))
    msg = released(ReleaseCause.EVENT_CANCELLED)
    assert domain.emails_cancel(msg)
    spec = domain.for_cancelled(msg)
    assert spec.kind is Kind.CANCELLED and spec.email_message_id == f"<cancelled.{msg.order_id}@ticketing>"
    email = render(spec, "ticketing@example.com")
    assert "huỷ sự kiện" in email.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "300.000 ₫" in email.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]


def test_the_refund_email_says_why_the_money_goes_back() -> None:
    def text(cause: RefundCause, locale: str) -> str:
        msg = OrderRefunded(
            order_id=uuid.uuid4(),
            user_id="lan",
            user_email="lan@example.com",
            locale=locale,
            amount=1,
            reason="r",
            cause=cause,
        )
        body = render(domain.for_refunded(msg), "ticketing@example.com").get_body(preferencelist=("plain",))
        return str(body.get_content())  # type: ignore[union-attr]

    assert "expired" in text(RefundCause.LATE_PAYMENT, "en")
    assert "cancelled the event" in text(RefundCause.EVENT_CANCELLED, "en")
    assert "organiser refunded" in text(RefundCause.ORGANISER, "en")
    assert "huỷ sự kiện" in text(RefundCause.EVENT_CANCELLED, "vi")
