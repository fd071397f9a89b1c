"""The one interface every payment provider implements (VNPAY today; MoMo or Stripe are new modules).

The rest of the system speaks only these types: a payment attempt to sign, a verified notification, the
answer of a status query and of a refund. Nothing outside a provider module knows a provider's field names.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID


class Outcome(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"  # money taken: the order may become PAID
    FAILED = "FAILED"  # declined, cancelled, timed out: nothing taken
    REVIEW = "REVIEW"  # money taken but the provider flags it (VNPAY 07): held for a human, not paid


@dataclass(frozen=True)
class PaymentAttempt:
    """One payment attempt of an order: what the payment URL is signed over."""

    order_id: UUID
    attempt: int  # 1, 2, ...: a new attempt after a failed one needs a new provider reference
    amount: int  # integer VND
    created_at: datetime  # when the attempt began (VNPAY: vnp_CreateDate; querydr's vnp_TransactionDate)
    expires_at: datetime  # the hold's expiry: the provider refuses payment after it
    description: str
    client_ip: str = "127.0.0.1"


class NotANotification(ValueError):
    """Correctly signed, but not a provider result: e.g. our own payment URL sent back as an IPN. It changes
    nothing, and it is never recorded, so it can never stand in the way of the provider's genuine result."""


@dataclass(frozen=True)
class Notification:
    """A provider's result for one attempt, after its signature passed."""

    provider: str
    txn_ref: str
    order_id: UUID
    attempt: int
    amount: int  # integer VND
    outcome: Outcome
    response_code: str
    transaction_status: str
    provider_txn_no: str  # the provider's own transaction id ('' if none)
    paid_at: datetime | None
    params: dict[str, str]  # the verified raw parameters, kept for audit


class QueryStatus(enum.StrEnum):
    FOUND = "FOUND"  # the provider knows the attempt; ``notification`` carries its result
    NOT_FOUND = "NOT_FOUND"  # the buyer never reached the payment step (or has not yet)
    ERROR = "ERROR"  # try again later


@dataclass(frozen=True)
class QueryResult:
    status: QueryStatus
    notification: Notification | None = None
    detail: str = ""
    refunded: bool = False  # the provider already refunded this payment


class RefundStatus(enum.StrEnum):
    CONFIRMED = "CONFIRMED"  # the provider accepted the refund
    IN_PROGRESS = "IN_PROGRESS"  # already requested; ask again later
    REFUSED = "REFUSED"  # the provider will not refund (e.g. the payment did not succeed there)
    ERROR = "ERROR"  # transient: retry


@dataclass(frozen=True)
class RefundRequest:
    txn_ref: str
    amount: int  # integer VND
    provider_txn_no: str
    transaction_date: datetime  # the attempt's created_at
    reason: str


@dataclass(frozen=True)
class RefundResult:
    status: RefundStatus
    detail: str = ""
    raw: dict[str, str] | None = None


class PaymentProvider(Protocol):
    name: str

    def txn_ref(self, order_id: UUID, attempt: int) -> str:
        """The provider reference of an attempt (unique per attempt, maps back to the order)."""

    def parse_txn_ref(self, txn_ref: str) -> tuple[UUID, int] | None:
        """The order and attempt a reference names, or None when it is not one of ours."""

    def payment_url(self, attempt: PaymentAttempt) -> str:
        """The signed URL the buyer's browser opens to pay."""

    def verify(self, params: Mapping[str, str]) -> bool:
        """True when the parameters carry a valid signature (constant-time compare)."""

    def notification(self, params: Mapping[str, str]) -> Notification:
        """Parse verified parameters (call ``verify`` first). Raises NotANotification for signed parameters that
        are not a provider result (our own payment URL), ValueError for a result that is not ours."""

    async def query(self, txn_ref: str, transaction_date: datetime) -> QueryResult:
        """Ask the provider for an attempt's result (reconciliation)."""

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Ask the provider to refund a payment in full."""
