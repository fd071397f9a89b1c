"""Which email an order's status stands for: the one the mailer sent when the order got there, and the one a
buyer's resend asks for again (the gateway refuses a resend for a status that has none; the mailer rebuilds it).
Values are the mailer's email kinds (``mailer.emails.kind``)."""

from __future__ import annotations

from shared.messages import OrderStatus

EMAIL_KIND_OF_STATUS: dict[OrderStatus, str] = {
    OrderStatus.PAID: "paid",  # the ticket email (order.paid)
    OrderStatus.EXPIRED: "expired",  # the hold ran out (order.expired)
    OrderStatus.REFUNDED: "refunded",  # the money went back (order.refunded)
}


def email_kind(status: OrderStatus) -> str | None:
    """The kind of the order's current email, or None when its status has none (PENDING, CANCELLED, ...)."""
    return EMAIL_KIND_OF_STATUS.get(status)
