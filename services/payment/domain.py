"""Payment rules with no I/O: the payment attempt's state machine, and what a recorded result leads to.

Every change of an attempt's status in ``store.py`` and ``ops_store.py`` is one UPDATE guarded by
``ATTEMPT_TRANSITIONS`` (``sources_of``): a move the table does not allow can never be written.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from shared.payments.answers import OrderFacts
from shared.payments.providers.base import Notification, Outcome

MAX_ATTEMPTS = 99  # the two-digit attempt of a VNPAY reference


class AttemptStatus(enum.StrEnum):
    """The statuses of ``payment.attempts`` (its CHECK constraint lists the same)."""

    STARTED = "STARTED"  # a payment URL was handed out; no result yet
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REVIEW = "REVIEW"  # money taken, flagged by the provider (VNPAY 07): an operator decides
    ABANDONED = "ABANDONED"  # no result long after the hold ended, or a later attempt took the payment
    ACCEPTED = "ACCEPTED"  # a review an operator applied as a success
    REJECTED = "REJECTED"  # a review an operator refunded


class RefundRecordStatus(enum.StrEnum):
    """The statuses of ``payment.refunds`` and ``payment.review_refunds`` (their CHECK constraints list the same).

    FAILED is the one word for a refund that needs an operator, whatever stopped it: the provider refused
    (``RefundStatus.REFUSED``, the provider's answer) or, for a review refund, an error. ``ticketing payments
    refunds ls`` lists them and ``retry`` moves them back to REQUESTED.
    """

    REQUESTED = "REQUESTED"  # being asked of the provider (or due to be asked again)
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"


ATTEMPT_TRANSITIONS: dict[AttemptStatus, frozenset[AttemptStatus]] = {
    AttemptStatus.STARTED: frozenset(
        {AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.REVIEW, AttemptStatus.ABANDONED}
    ),
    # A recorded failure the provider contradicts: its word that the money was taken wins (answers.supersedes).
    AttemptStatus.FAILED: frozenset({AttemptStatus.SUCCEEDED, AttemptStatus.REVIEW}),
    AttemptStatus.REVIEW: frozenset({AttemptStatus.ACCEPTED, AttemptStatus.REJECTED}),
}


def can_move(current: AttemptStatus, new: AttemptStatus) -> bool:
    return new in ATTEMPT_TRANSITIONS.get(current, frozenset())


def sources_of(new: AttemptStatus) -> list[str]:
    """The statuses an attempt may move to ``new`` from: the guard of the UPDATE that moves it."""
    return sorted(s.value for s, targets in ATTEMPT_TRANSITIONS.items() if new in targets)


def attempt_status(outcome: Outcome) -> AttemptStatus:
    return AttemptStatus(outcome.value)  # SUCCEEDED | FAILED | REVIEW


def next_attempt(n: Notification, order: OrderFacts) -> int | None:
    """After a failed attempt of a still-PENDING order the buyer may try again, under a new reference."""
    if n.outcome is Outcome.FAILED and order.status == "PENDING" and n.attempt < MAX_ATTEMPTS:
        return n.attempt + 1
    return None


def abandoned(expires_at: datetime, now: datetime, window_seconds: int) -> bool:
    """No result long after the hold ended (past the provider's IPN retry window): stop asking."""
    return now > expires_at + timedelta(seconds=window_seconds)
