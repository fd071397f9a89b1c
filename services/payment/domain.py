"""Payment rules with no I/O: how a verified notification is answered and what it leads to."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.payments.answers import OrderFacts
from shared.payments.providers.base import Notification, Outcome

MAX_ATTEMPTS = 99  # the two-digit attempt of a VNPAY reference


def attempt_status(outcome: Outcome) -> str:
    return outcome.value  # SUCCEEDED | FAILED | REVIEW, the attempts table's terminal statuses


def next_attempt(n: Notification, order: OrderFacts) -> int | None:
    """After a failed attempt of a still-PENDING order the buyer may try again, under a new reference."""
    if n.outcome is Outcome.FAILED and order.status == "PENDING" and n.attempt < MAX_ATTEMPTS:
        return n.attempt + 1
    return None


def abandoned(expires_at: datetime, now: datetime, window_seconds: int) -> bool:
    """No result long after the hold ended (past the provider's IPN retry window): stop asking."""
    return now > expires_at + timedelta(seconds=window_seconds)
