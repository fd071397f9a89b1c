"""Repositories of the payment operator actions, bound to a ``PaymentUnitOfWork`` (schema ``payment``): review
decisions, review refunds, failed refunds, the audit log.

Every decision is one conditional UPDATE guarded by the row's current status, so a repeated or concurrent
action changes nothing the second time (the loser sees 0 rows and is told why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from services.payment.domain import AttemptStatus, sources_of
from shared.repository import Repository

# A REQUESTED review refund this old lost its worker (crash between the claim and the provider's answer):
# list it as failed and let an operator retry it.
STALE_REQUEST_SECONDS = 120


@dataclass(frozen=True)
class Decided:
    txn_ref: str
    provider: str
    order_id: UUID
    amount: int
    provider_txn_no: str
    paid_at: datetime | None
    created_at: datetime  # the attempt's vnp_CreateDate (the refund's vnp_TransactionDate)

    @classmethod
    def of(cls, row: Any) -> Decided:
        """From a row with these columns (the attempt's, its result's amount and provider number)."""
        return cls(
            row.txn_ref, row.provider, row.order_id, row.amount, row.provider_txn_no, row.paid_at, row.created_at
        )


class Audit(Repository):
    """``payment.audit_log``: who did what to which payment and what came of it (refusals and no-ops too)."""

    async def record(self, actor: str, action: str, target: str, result: str, detail: str = "") -> None:
        await self.execute(
            "INSERT INTO payment.audit_log (actor, action, target, result, detail) "
            "VALUES (:actor, :action, :target, :result, :detail)",
            {"actor": actor, "action": action, "target": target, "result": result, "detail": detail[:2000]},
        )


class Reviews(Repository):
    """Attempts held for review (VNPAY 07), an operator's decision on them, and the refunds of rejected ones
    (``payment.review_refunds``)."""

    async def listed(self, limit: int) -> list[dict[str, Any]]:
        rows = await self.all(
            "SELECT a.txn_ref, a.provider, a.order_id, a.attempt, a.amount, a.updated_at AS held_since, "
            "t.response_code, t.transaction_status, t.provider_txn_no, t.paid_at, t.source, "
            "o.status AS order_status, o.expires_at "
            "FROM payment.attempts a "
            "JOIN payment.transactions t ON t.provider = a.provider AND t.txn_ref = a.txn_ref "
            "LEFT JOIN read_api.orders o ON o.id = a.order_id "
            "WHERE a.status = 'REVIEW' ORDER BY a.updated_at LIMIT :n",
            {"n": limit},
        )
        return [dict(r._mapping) for r in rows]

    async def attempt_status(self, txn_ref: str) -> str | None:
        return await self.scalar("SELECT status FROM payment.attempts WHERE txn_ref = :r", {"r": txn_ref})

    async def decide(self, txn_ref: str, status: AttemptStatus) -> Decided | None:
        """REVIEW -> ``status`` (ACCEPTED | REJECTED); None when the attempt is not (or no longer) in review."""
        row = await self.first(
            "UPDATE payment.attempts a SET status = :s, updated_at = now() FROM payment.transactions t "
            "WHERE a.txn_ref = :r AND a.status = ANY(:from) "
            "AND t.provider = a.provider AND t.txn_ref = a.txn_ref "
            "RETURNING a.txn_ref, a.provider, a.order_id, t.amount, t.provider_txn_no, t.paid_at, a.created_at",
            {"r": txn_ref, "s": status.value, "from": sources_of(status)},
        )
        return Decided.of(row) if row else None

    async def request_refund(self, d: Decided) -> None:
        await self.execute(
            "INSERT INTO payment.review_refunds (txn_ref, provider, order_id, amount, status) "
            "VALUES (:r, :p, :o, :a, 'REQUESTED') ON CONFLICT (txn_ref) DO NOTHING",
            {"r": d.txn_ref, "p": d.provider, "o": d.order_id, "a": d.amount},
        )

    async def claim_refund_retry(self, txn_ref: str) -> bool:
        """FAILED (or stale REQUESTED) -> REQUESTED: exactly one retry at a time asks the provider."""
        row = await self.first(
            "UPDATE payment.review_refunds SET status = 'REQUESTED', tries = tries + 1, updated_at = now() "
            "WHERE txn_ref = :r AND (status = 'FAILED' OR (status = 'REQUESTED' "
            "AND updated_at < now() - make_interval(secs => CAST(:stale AS double precision)))) "
            "RETURNING txn_ref",
            {"r": txn_ref, "stale": STALE_REQUEST_SECONDS},
        )
        return row is not None

    async def refund_request(self, txn_ref: str) -> Decided | None:
        row = await self.first(
            "SELECT r.txn_ref, r.provider, r.order_id, r.amount, t.provider_txn_no, t.paid_at, a.created_at "
            "FROM payment.review_refunds r JOIN payment.attempts a ON a.txn_ref = r.txn_ref "
            "JOIN payment.transactions t ON t.provider = r.provider AND t.txn_ref = r.txn_ref "
            "WHERE r.txn_ref = :r",
            {"r": txn_ref},
        )
        return Decided.of(row) if row else None

    async def finish_refund(self, txn_ref: str, status: str, detail: str, response: dict[str, Any] | None) -> bool:
        row = await self.first(
            "UPDATE payment.review_refunds SET status = :s, detail = :d, response = CAST(:resp AS jsonb), "
            "updated_at = now() WHERE txn_ref = :r AND status = 'REQUESTED' RETURNING txn_ref",
            {"r": txn_ref, "s": status, "d": detail, "resp": json.dumps(response or {})},
        )
        return row is not None

    async def refund_status(self, txn_ref: str) -> tuple[str, str] | None:
        row = await self.first("SELECT status, detail FROM payment.review_refunds WHERE txn_ref = :r", {"r": txn_ref})
        return (row.status, row.detail) if row else None


class FailedRefunds(Repository):
    """Refunds that need an operator, in either table: listed, looked at, reopened for a retry."""

    async def reopen(self, txn_ref: str) -> UUID | None:
        """FAILED -> REQUESTED, due now: the normal refund path then asks the provider again."""
        return await self.scalar(
            "UPDATE payment.refunds SET status = 'REQUESTED', next_try_at = now(), last_error = NULL "
            "WHERE txn_ref = :r AND status = 'FAILED' RETURNING order_id",
            {"r": txn_ref},
        )

    async def status(self, txn_ref: str) -> tuple[str, str] | None:
        row = await self.first(
            "SELECT status, coalesce(last_error, '') AS detail FROM payment.refunds WHERE txn_ref = :r", {"r": txn_ref}
        )
        return (row.status, row.detail) if row else None

    async def listed(self, limit: int) -> list[dict[str, Any]]:
        """Both kinds, one list: order refunds the provider refused (kind ``late_payment`` for every order refund:
        a late payment's, the organiser's, a cancelled event's; ``reason`` says which), and review refunds that
        failed."""
        rows = await self.all(
            "SELECT * FROM ("
            " SELECT 'late_payment' AS kind, txn_ref, provider, order_id, amount, status, tries, "
            "  coalesce(last_error, '') AS detail, requested_at, reason "
            "  FROM payment.refunds WHERE status = 'FAILED'"
            " UNION ALL"
            " SELECT 'rejected_review', txn_ref, provider, order_id, amount, status, tries, detail, requested_at, "
            "  'rejected after review' "
            "  FROM payment.review_refunds WHERE status = 'FAILED' OR (status = 'REQUESTED' "
            "  AND updated_at < now() - make_interval(secs => CAST(:stale AS double precision)))"
            ") f ORDER BY requested_at LIMIT :n",
            {"n": limit, "stale": STALE_REQUEST_SECONDS},
        )
        return [dict(r._mapping) for r in rows]
