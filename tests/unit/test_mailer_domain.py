"""Pure mailer logic: which email for which event, locales, money, failure classification, rendering."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import aiosmtplib
import pytest

from services.mailer import domain
from services.mailer.domain import Classification, InvalidEmailData, Kind
from services.mailer.render import render
from shared.messages import OrderRefunded, OrderReleased, OrderStatus, PricedLine
from tests.mailer_support import paid_order


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("vi", "vi"),
        ("en", "en"),
        ("en-GB", "en"),
        ("EN_us", "en"),
        ("fr", "vi"),
        ("", "vi"),
    ],
)
def test_locale_falls_back_to_vietnamese(given: str, expected: str) -> None:
    assert domain.pick_locale(given) == expected


def test_money_is_integer_vnd_in_the_buyers_convention() -> None:
    assert domain.format_vnd(1_250_000, "vi") == "1.250.000 ₫"
    assert domain.format_vnd(1_250_000, "en") == "1,250,000 VND"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (aiosmtplib.SMTPDataError(550, "mailbox unavailable"), Classification.PERMANENT),
        (aiosmtplib.SMTPDataError(554, "rejected"), Classification.PERMANENT),
        (aiosmtplib.SMTPDataError(451, "try later"), Classification.TRANSIENT),
        (aiosmtplib.SMTPSenderRefused(421, "busy", "a@b.c"), Classification.TRANSIENT),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@b.c")]),
            Classification.PERMANENT,
        ),
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "later", "a@b.c")]),
            Classification.TRANSIENT,
        ),
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), Classification.PERMANENT),
        (aiosmtplib.SMTPConnectError("refused"), Classification.TRANSIENT),
        (aiosmtplib.SMTPServerDisconnected("gone"), Classification.TRANSIENT),
        (aiosmtplib.SMTPTimeoutError("slow"), Classification.TRANSIENT),
        (ConnectionRefusedError(111, "refused"), Classification.TRANSIENT),
        (TimeoutError(), Classification.TRANSIENT),
        (InvalidEmailData("no address"), Classification.PERMANENT),
    ],
)
def test_smtp_failures_are_classified(exc: BaseException, expected: Classification) -> None:
    assert domain.classify(exc) is expected


def test_paid_email_spec_and_render_carry_every_ticket_with_an_inline_qr() -> None:
    order = paid_order("buyer@example.com", locale="vi", tickets=2)
    spec = domain.for_paid(order)
    assert spec.kind is Kind.PAID and spec.locale == "vi"
    assert spec.email_message_id == f"<paid.{order.order_id}@ticketing>"
    msg = render(spec, "Ticketing <tickets@example.com>")
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    images = [p for p in msg.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 2
    for ticket, image in zip(order.tickets, images, strict=True):
        assert ticket.code in text and ticket.code in html
        assert image["Content-ID"] == f"<{domain.qr_content_id(ticket.code)}>"
        assert f"cid:{domain.qr_content_id(ticket.code)}" in html
    assert "Vé của bạn" in str(msg["Subject"])


def test_html_escapes_what_came_from_the_order() -> None:
    order = paid_order("buyer@example.com", locale="en").model_copy(update={"event_title": "<script>x</script>"})
    html = render(domain.for_paid(order), "t@example.com").get_body(preferencelist=("html",))
    assert "<script>" not in html.get_content()  # type: ignore[union-attr]


@pytest.mark.parametrize("address", ["", "no-at-sign", "a@b", "two@@example.com", "sp ace@example.com"])
def test_undeliverable_addresses_are_data_errors(address: str) -> None:
    with pytest.raises(InvalidEmailData):
        domain.for_paid(paid_order(address))


def test_a_paid_order_without_tickets_is_a_data_error() -> None:
    order = paid_order("buyer@example.com").model_copy(update={"tickets": []})
    with pytest.raises(InvalidEmailData):
        domain.for_paid(order)


def test_expired_and_refunded_emails_render_in_both_locales() -> None:
    items = [PricedLine(ticket_type_id=uuid.uuid4(), quantity=3, unit_price=100_000)]
    for locale in ("vi", "en"):
        expired = domain.for_expired(
            OrderReleased(
                order_id=uuid.uuid4(),
                user_id="u",
                user_email="a@example.com",
                locale=locale,
                status=OrderStatus.EXPIRED,
                items=items,
            )
        )
        assert expired.context["quantity"] == 3
        refunded = domain.for_refunded(
            OrderRefunded(
                order_id=uuid.uuid4(),
                user_id="u",
                user_email="a@example.com",
                locale=locale,
                amount=300_000,
                reason="late",
            )
        )
        for spec in (expired, refunded):
            msg = render(spec, "t@example.com")
            assert spec.context["order_id"] in msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]


def test_venue_time_is_shown_in_vietnam_time() -> None:
    assert domain.format_time(datetime(2030, 1, 1, 13, 0, tzinfo=UTC), "vi") == "20:00 01/01/2030"


def test_a_title_with_line_breaks_makes_one_safe_subject_line() -> None:
    assert domain.header_text("Hòa nhạc\r\nBcc: evil@example.com\t\x00 Mùa Thu") == (
        "Hòa nhạc Bcc: evil@example.com Mùa Thu"
    )
    assert domain.header_text("Đêm\u2028nhạc") == "Đêm nhạc"


def test_the_email_state_machine_never_sends_a_sent_email_again() -> None:
    s = domain.EmailStatus
    assert domain.email_sources_of(s.SENDING) == ["failed", "sending"]  # a failure, or a claim whose lease ran out
    assert domain.email_sources_of(s.SENT) == ["failed", "sending"]  # a late success still counts as sent
    assert domain.email_sources_of(s.FAILED) == ["sending"]
    assert s.SENT not in domain.EMAIL_TRANSITIONS  # final: nothing follows
