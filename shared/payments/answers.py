"""The rules a provider's notification is answered by, applied twice: by the gateway before it hands the
notification over, and by the payment service, which records it (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.payments.providers.base import Notification, Outcome

# IPN answers (VNPAY's RspCode; other providers map theirs from these meanings).
RECORDED = "00"  # recorded, a failure included
UNKNOWN_ORDER = "01"
ALREADY_CONFIRMED = "02"
WRONG_AMOUNT = "04"
BAD_SIGNATURE = "97"
OTHER_ERROR = "99"


@dataclass(frozen=True)
class OrderFacts:
    """What the payment service needs of an order (from inventory's read-only view)."""

    total: int
    status: str
    created_at: datetime
    expires_at: datetime | None


def precheck(n: Notification, order: OrderFacts | None) -> str | None:
    """The answer for a notification that must not be recorded at all, or None to record it."""
    if order is None or order.expires_at is None:  # never held (REJECTED orders have no expiry)
        return UNKNOWN_ORDER
    if n.amount != order.total:  # integer VND on both sides
        return WRONG_AMOUNT
    return None


def supersedes(new: Outcome, recorded: Outcome) -> bool:
    """A later result replaces a recorded one only when it says money was taken where the record says not.

    The provider's word that a payment succeeded (or is held for review) must never be blocked by an earlier
    record of failure; a later failure never undoes a recorded success.
    """
    return recorded is Outcome.FAILED and new is not Outcome.FAILED
