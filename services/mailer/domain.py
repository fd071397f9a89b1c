"""Pure mailer logic: which email for which event, how it is addressed, and whether a failure is worth a retry."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiosmtplib

from shared.messages import OrderPaid, OrderRefunded, OrderReleased, ReleaseCause

LOCALES = ("vi", "en")
DEFAULT_LOCALE = "vi"  # the product's home market
VENUE_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

# Deliberately loose: the SMTP server is the authority; this only catches data that can never be delivered.
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class Kind(enum.StrEnum):
    PAID = "paid"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"  # a hold the cancellation of its event released


class EmailStatus(enum.StrEnum):
    """The statuses of ``mailer.emails`` (its CHECK constraint lists the same)."""

    SENDING = "sending"  # claimed by a worker, under a lease (claimed_at)
    FAILED = "failed"  # the last try failed; the next delivery of the message may claim it again
    SENT = "sent"  # the SMTP server took it: never sent again


# Which status may follow which; every UPDATE in store.py is guarded by it. SENDING -> SENDING is a claim whose
# lease ran out (its worker died). FAILED -> SENT: a send that finished after another worker took its claim
# over and failed; the email did go out, so it must never be sent again.
EMAIL_TRANSITIONS: dict[EmailStatus, frozenset[EmailStatus]] = {
    EmailStatus.SENDING: frozenset({EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.SENDING}),
    EmailStatus.FAILED: frozenset({EmailStatus.SENDING, EmailStatus.SENT}),
}


def email_sources_of(new: EmailStatus) -> list[str]:
    """The statuses an email may move to ``new`` from: the guard of the UPDATE that moves it."""
    return sorted(s.value for s, targets in EMAIL_TRANSITIONS.items() if new in targets)


class Classification(enum.StrEnum):
    TRANSIENT = "transient"  # the retry ladder may help
    PERMANENT = "permanent"  # retrying cannot help: dead-letter at once


class InvalidEmailData(ValueError):
    """The message cannot become an email (no or malformed recipient)."""


@dataclass(frozen=True)
class EmailSpec:
    """What to send: a template, its context, and the identity that makes it exactly-once."""

    kind: Kind
    order_id: str
    recipient: str
    locale: str
    context: dict[str, Any]
    # A buyer's deliberate resend (ResendEmail.resend_id): a row of its own in the exactly-once record, so the
    # order's first email does not swallow it; '' for the email the order's event caused.
    resend_id: str = ""

    @property
    def email_message_id(self) -> str:
        # Deterministic RFC 5322 Message-ID: if the one crash window does duplicate an email, mail clients
        # and many MTAs collapse the two copies because they carry the same id. A resend is a new email.
        if self.resend_id:
            return f"<{self.kind.value}.{self.order_id}.resend-{self.resend_id}@ticketing>"
        return f"<{self.kind.value}.{self.order_id}@ticketing>"

    def resent(self, resend_id: str) -> EmailSpec:
        return replace(self, resend_id=resend_id)


SUBJECTS: dict[tuple[Kind, str], str] = {
    (Kind.PAID, "vi"): "Vé của bạn cho {event_title} — đơn hàng {short_id}",
    (Kind.PAID, "en"): "Your tickets for {event_title} — order {short_id}",
    (Kind.EXPIRED, "vi"): "Đơn hàng {short_id} đã hết hạn giữ vé",
    (Kind.EXPIRED, "en"): "Your hold on order {short_id} has expired",
    (Kind.REFUNDED, "vi"): "Đơn hàng {short_id} đã được hoàn tiền",
    (Kind.REFUNDED, "en"): "Order {short_id} has been refunded",
    (Kind.CANCELLED, "vi"): "Sự kiện đã bị huỷ — đơn hàng {short_id} đã được huỷ",
    (Kind.CANCELLED, "en"): "The event was cancelled — order {short_id} is cancelled",
}


def pick_locale(locale: str) -> str:
    """The buyer's locale among those we have templates for ('en-GB' -> 'en'; unknown -> Vietnamese)."""
    base = (locale or "").replace("_", "-").split("-")[0].lower()
    return base if base in LOCALES else DEFAULT_LOCALE


def check_recipient(address: str) -> str:
    address = (address or "").strip()
    if not _EMAIL.match(address):
        raise InvalidEmailData(f"no deliverable recipient address: {address!r}")
    return address


def format_vnd(amount: int, locale: str) -> str:
    if locale == "vi":
        return f"{amount:,}".replace(",", ".") + " ₫"
    return f"{amount:,} VND"


def format_time(value: datetime, locale: str) -> str:
    local = value.astimezone(VENUE_TZ) if value.tzinfo else value
    return local.strftime("%H:%M %d/%m/%Y") if locale == "vi" else local.strftime("%d %b %Y, %H:%M")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_text(value: str) -> str:
    """Text safe for a header: an organiser's title with a CR/LF in it must neither break nor inject headers."""
    return " ".join(_CONTROL.sub(" ", value).split())


def subject(spec: EmailSpec) -> str:
    return header_text(SUBJECTS[(spec.kind, spec.locale)].format(**spec.context))


def for_paid(msg: OrderPaid) -> EmailSpec:
    locale = pick_locale(msg.locale)
    if not msg.tickets:
        raise InvalidEmailData(f"order {msg.order_id} is paid but carries no tickets")
    names = {t.ticket_type_id: t.ticket_type_name for t in msg.tickets}
    context = {
        "order_id": str(msg.order_id),
        "short_id": str(msg.order_id)[:8],
        "event_title": msg.event_title,
        "venue": msg.venue,
        "city": msg.city,
        "starts_at": format_time(msg.starts_at, locale),
        "paid_at": format_time(msg.paid_at, locale),
        "total": format_vnd(msg.total, locale),
        "lines": [
            {
                "name": names.get(i.ticket_type_id, str(i.ticket_type_id)),
                "quantity": i.quantity,
                "unit_price": format_vnd(i.unit_price, locale),
            }
            for i in msg.items
        ],
        "tickets": [{"code": t.code, "type": t.ticket_type_name, "cid": qr_content_id(t.code)} for t in msg.tickets],
    }
    return EmailSpec(Kind.PAID, str(msg.order_id), check_recipient(msg.user_email), locale, context)


def for_expired(msg: OrderReleased) -> EmailSpec:
    return _for_released(Kind.EXPIRED, msg)


def _for_released(kind: Kind, msg: OrderReleased) -> EmailSpec:
    """A hold that ended unpaid (its time ran out, or the event's cancellation released it): what it was."""
    locale = pick_locale(msg.locale)
    context = {
        "order_id": str(msg.order_id),
        "short_id": str(msg.order_id)[:8],
        "quantity": sum(i.quantity for i in msg.items),
        "total": format_vnd(sum(i.quantity * i.unit_price for i in msg.items), locale),
    }
    return EmailSpec(kind, str(msg.order_id), check_recipient(msg.user_email), locale, context)


def for_refunded(msg: OrderRefunded) -> EmailSpec:
    locale = pick_locale(msg.locale)
    context = {
        "order_id": str(msg.order_id),
        "short_id": str(msg.order_id)[:8],
        "amount": format_vnd(msg.amount, locale),
        "reason": msg.reason,
        "cause": msg.cause.value,
    }
    return EmailSpec(Kind.REFUNDED, str(msg.order_id), check_recipient(msg.user_email), locale, context)


def emails_cancel(msg: OrderReleased) -> bool:
    """Whether a cancelled hold is emailed: only when the organiser's cancellation of the event released it."""
    return msg.cause is ReleaseCause.EVENT_CANCELLED


def for_cancelled(msg: OrderReleased) -> EmailSpec:
    return _for_released(Kind.CANCELLED, msg)


def qr_content_id(code: str) -> str:
    """The Content-ID of a ticket's QR image (codes are URL-safe; anything else is replaced)."""
    return "qr-" + re.sub(r"[^A-Za-z0-9._-]", "_", code) + "@ticketing"


def classify(exc: BaseException) -> Classification:
    """SMTP 5xx and data errors are permanent; 4xx, refused connections, timeouts and disconnects are not."""
    if isinstance(exc, InvalidEmailData):
        return Classification.PERMANENT
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        return Classification.PERMANENT if codes and all(c >= 500 for c in codes) else Classification.TRANSIENT
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        # Connection-level failures carry code -1; 4xx asks us to come back later.
        return Classification.PERMANENT if 500 <= exc.code < 600 else Classification.TRANSIENT
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return Classification.PERMANENT  # e.g. STARTTLS required by config, not offered: a config error
    if isinstance(exc, (aiosmtplib.SMTPException, OSError, TimeoutError)):
        return Classification.TRANSIENT
    return Classification.TRANSIENT  # unknown: the ladder is bounded and ends in the DLQ anyway
