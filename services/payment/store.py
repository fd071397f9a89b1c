"""Payment SQL as repositories bound to a unit of work's transaction (``PaymentUnitOfWork``): schema ``payment``;
inventory's orders are read through its read-only view ``read_api.orders``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from services.payment.domain import AttemptStatus, sources_of
from shared.payments.answers import OrderFacts
from shared.payments.providers.base import Notification, Outcome
from shared.repository import Repository


@dataclass(frozen=True)
class NewAttempt:
    txn_ref: str
    order_id: UUID
    attempt: int
    amount: int
    created_at: datetime
    expires_at: datetime


def _result_values(n: Notification, source: str) -> dict[str, Any]:
    """A provider result as the columns of ``payment.transactions`` (recorded, or replacing a failure)."""
    return {
        "provider": n.provider,
        "txn_ref": n.txn_ref,
        "order_id": n.order_id,
        "amount": n.amount,
        "outcome": n.outcome.value,
        "rc": n.response_code,
        "ts": n.transaction_status,
        "no": n.provider_txn_no,
        "paid_at": n.paid_at,
        "source": source,
        "params": json.dumps(_without_hash(n.params)),
    }


def _without_hash(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in ("vnp_SecureHash", "vnp_SecureHashType")}


@dataclass(frozen=True)
class DueAttempt:
    txn_ref: str
    provider: str
    order_id: UUID
    created_at: datetime
    expires_at: datetime
    status: str  # STARTED (no result yet) or FAILED (a recorded failure the provider has not confirmed)


@dataclass(frozen=True)
class Paid:
    provider: str
    txn_ref: str
    amount: int
    provider_txn_no: str
    transaction_date: datetime  # the attempt's created_at


@dataclass(frozen=True)
class DueRefund:
    order_id: UUID
    provider: str
    txn_ref: str
    amount: int
    reason: str
    provider_txn_no: str
    transaction_date: datetime


class Orders(Repository):
    """Inventory's orders as the payment service may see them: through the read-only view ``read_api.orders``."""

    async def facts(self, order_id: UUID) -> OrderFacts | None:
        row = await self.first(
            "SELECT total, status, created_at, expires_at FROM read_api.orders WHERE id = :id", {"id": order_id}
        )
        return OrderFacts(row.total, row.status, row.created_at, row.expires_at) if row else None

    async def created_at(self, order_ids: Sequence[UUID]) -> dict[UUID, datetime]:
        """When each of these orders was created (those not visible are missing): one read for a batch."""
        rows = await self.all(
            "SELECT id, created_at FROM read_api.orders WHERE id = ANY(:ids)", {"ids": list(order_ids)}
        )
        return {r.id: r.created_at for r in rows}


class Attempts(Repository):
    """``payment.attempts``: one row per provider reference; every status change guarded by ``sources_of``."""

    async def register_one(
        self,
        provider: str,
        txn_ref: str,
        order_id: UUID,
        attempt: int,
        amount: int,
        created_at: datetime,
        expires_at: datetime,
    ) -> None:
        await self.register(provider, [NewAttempt(txn_ref, order_id, attempt, amount, created_at, expires_at)])

    async def register(self, provider: str, attempts: Sequence[NewAttempt]) -> None:
        """Register attempts in one statement (an attempt registered before stays as it is)."""
        if not attempts:
            return
        await self.execute(
            "INSERT INTO payment.attempts "
            "(txn_ref, provider, order_id, attempt, amount, status, created_at, expires_at) "
            "SELECT d.txn_ref, :provider, d.order_id, d.attempt, d.amount, 'STARTED', d.created_at, d.expires_at "
            "FROM unnest(CAST(:refs AS text[]), CAST(:ids AS uuid[]), CAST(:nos AS int[]), "
            "CAST(:amounts AS bigint[]), "
            "CAST(:created AS timestamptz[]), CAST(:expires AS timestamptz[])) "
            "AS d(txn_ref, order_id, attempt, amount, created_at, expires_at) "
            "ORDER BY d.txn_ref ON CONFLICT DO NOTHING",
            {
                "provider": provider,
                "refs": [a.txn_ref for a in attempts],
                "ids": [a.order_id for a in attempts],
                "nos": [a.attempt for a in attempts],
                "amounts": [a.amount for a in attempts],
                "created": [a.created_at for a in attempts],
                "expires": [a.expires_at for a in attempts],
            },
        )

    async def settle(self, txn_ref: str, status: AttemptStatus) -> None:
        await self.execute(
            "UPDATE payment.attempts SET status = :s, updated_at = now() "
            "WHERE txn_ref = :r AND status = 'STARTED' AND status = ANY(:from)",
            {"r": txn_ref, "s": status, "from": sources_of(status)},
        )

    async def claim_to_reconcile(
        self, lead_seconds: int, every_seconds: float, window_seconds: int, limit: int = 100
    ) -> list[DueAttempt]:
        """Attempts with no result whose hold ends within the lead time (or has ended), and recorded failures the
        provider has not confirmed (within the window), not asked about lately.

        Claiming marks them queried (and the transaction commits before the provider is asked), so several payment
        service instances never ask about the same attempt at once.
        """
        rows = await self.all(
            "UPDATE payment.attempts SET queried_at = now(), query_count = query_count + 1 WHERE txn_ref IN ("
            " SELECT txn_ref FROM payment.attempts WHERE (status = 'STARTED' OR (status = 'FAILED'"
            "   AND NOT outcome_confirmed"
            "   AND expires_at > now() - make_interval(secs => CAST(:window AS double precision))))"
            " AND expires_at <= now() + make_interval(secs => CAST(:lead AS double precision))"
            # Back off per attempt (every, 2x, 4x ... 16x): abandoned checkouts must not flood the provider.
            " AND (queried_at IS NULL OR queried_at <= now()"
            "      - make_interval(secs => CAST(:every AS double precision) * power(2, LEAST(query_count, 4))))"
            " ORDER BY expires_at LIMIT :n FOR UPDATE SKIP LOCKED) "
            "RETURNING txn_ref, provider, order_id, created_at, expires_at, status",
            {"lead": lead_seconds, "every": every_seconds, "window": window_seconds, "n": limit},
        )
        return [DueAttempt(r.txn_ref, r.provider, r.order_id, r.created_at, r.expires_at, r.status) for r in rows]

    async def abandon(self, txn_ref: str) -> None:
        await self.settle(txn_ref, AttemptStatus.ABANDONED)

    async def confirm_outcome(self, txn_ref: str) -> None:
        """The provider agrees with what is recorded: reconciliation stops asking."""
        await self.execute("UPDATE payment.attempts SET outcome_confirmed = true WHERE txn_ref = :r", {"r": txn_ref})


class Results(Repository):
    """``payment.transactions``: the provider's results, recorded at most once per (provider, reference)."""

    async def record(self, n: Notification, source: str) -> bool:
        """Record a provider result once: False when this (provider, reference) was recorded before."""
        row = await self.first(
            "INSERT INTO payment.transactions (provider, txn_ref, order_id, amount, outcome, response_code, "
            "transaction_status, provider_txn_no, paid_at, source, params) VALUES (:provider, :txn_ref, "
            ":order_id, :amount, :outcome, :rc, :ts, :no, :paid_at, :source, CAST(:params AS jsonb)) "
            "ON CONFLICT (provider, txn_ref) DO NOTHING RETURNING txn_ref",
            _result_values(n, source),
        )
        return row is not None

    async def recorded(self, provider: str, txn_ref: str) -> Outcome | None:
        """The recorded result of a reference, locked until the transaction ends (None when none is recorded)."""
        outcome = await self.scalar(
            "SELECT outcome FROM payment.transactions WHERE provider = :p AND txn_ref = :r FOR UPDATE",
            {"p": provider, "r": txn_ref},
        )
        return None if outcome is None else Outcome(outcome)

    async def supersede(self, n: Notification, source: str) -> bool:
        """Replace a recorded failure with the provider's contradicting result, keeping the replaced record."""
        row = await self.first(
            "UPDATE payment.transactions SET superseded = jsonb_build_object('outcome', outcome, "
            "'response_code', response_code, 'transaction_status', transaction_status, 'source', source, "
            "'params', params, 'recorded_at', recorded_at), outcome = :outcome, response_code = :rc, "
            "transaction_status = :ts, provider_txn_no = :no, paid_at = :paid_at, source = :source, "
            "params = CAST(:params AS jsonb), recorded_at = now() "
            "WHERE provider = :provider AND txn_ref = :txn_ref AND outcome = 'FAILED' RETURNING txn_ref",
            _result_values(n, source),
        )
        if row is None:
            return False
        await self.execute(
            "UPDATE payment.attempts SET status = :s, outcome_confirmed = true, updated_at = now() "
            "WHERE txn_ref = :r AND status = ANY(:from)",
            {"r": n.txn_ref, "s": n.outcome.value, "from": sources_of(AttemptStatus(n.outcome.value))},
        )
        # The attempt registered after the failure will never be paid: the money came through this one.
        await self.execute(
            "UPDATE payment.attempts SET status = 'ABANDONED', updated_at = now() "
            "WHERE order_id = :o AND attempt > :a AND status = ANY(:from)",
            {"o": n.order_id, "a": n.attempt, "from": sources_of(AttemptStatus.ABANDONED)},
        )
        return True

    async def paid(self, order_id: UUID) -> Paid | None:
        row = await self.first(
            "SELECT t.provider, t.txn_ref, t.amount, t.provider_txn_no, a.created_at "
            "FROM payment.transactions t "
            "JOIN payment.attempts a ON a.txn_ref = t.txn_ref "
            # A review an operator accepted is a success too (its refund, if the stock is gone, is owed).
            "WHERE t.order_id = :id AND (t.outcome = 'SUCCEEDED' OR a.status = 'ACCEPTED') "
            "ORDER BY t.recorded_at LIMIT 1",
            {"id": order_id},
        )
        return Paid(row.provider, row.txn_ref, row.amount, row.provider_txn_no, row.created_at) if row else None


class Refunds(Repository):
    """``payment.refunds``: an order's refund (late payment, organiser, cancelled event), retried until confirmed."""

    async def request(self, order_id: UUID, paid: Paid, reason: str) -> None:
        await self.execute(
            "INSERT INTO payment.refunds (order_id, provider, txn_ref, amount, reason, status) "
            "VALUES (:id, :provider, :txn_ref, :amount, :reason, 'REQUESTED') ON CONFLICT (order_id) DO NOTHING",
            {
                "id": order_id,
                "provider": paid.provider,
                "txn_ref": paid.txn_ref,
                "amount": paid.amount,
                "reason": reason,
            },
        )

    async def claim_due(self, retry_seconds: float, order_id: UUID | None = None, limit: int = 50) -> list[DueRefund]:
        """Refunds to ask the provider about now; claiming pushes their next try out, so one worker asks at a time."""
        only = "AND q.order_id = :id" if order_id else ""
        rows = await self.all(
            "UPDATE payment.refunds r SET tries = r.tries + 1, "
            "next_try_at = now() + make_interval(secs => CAST(:retry AS double precision)) "
            "FROM payment.transactions t JOIN payment.attempts a ON a.txn_ref = t.txn_ref "
            "WHERE t.provider = r.provider AND t.txn_ref = r.txn_ref AND r.order_id IN ("
            " SELECT q.order_id FROM payment.refunds q "
            f" WHERE q.status = 'REQUESTED' AND q.next_try_at <= now() {only}"
            " ORDER BY q.next_try_at LIMIT :n FOR UPDATE SKIP LOCKED) "
            "RETURNING r.order_id, r.provider, r.txn_ref, r.amount, r.reason, t.provider_txn_no, a.created_at",
            {"retry": retry_seconds, "n": limit, **({"id": order_id} if order_id else {})},
        )
        return [
            DueRefund(r.order_id, r.provider, r.txn_ref, r.amount, r.reason, r.provider_txn_no, r.created_at)
            for r in rows
        ]

    async def finish(self, order_id: UUID, status: str, detail: str, response: dict[str, Any] | None) -> bool:
        row = await self.first(
            "UPDATE payment.refunds SET status = :s, last_error = :d, response = CAST(:resp AS jsonb), "
            "confirmed_at = CASE WHEN :s = 'CONFIRMED' THEN now() END "
            "WHERE order_id = :id AND status = 'REQUESTED' RETURNING order_id",
            {"id": order_id, "s": status, "d": detail, "resp": json.dumps(response or {})},
        )
        return row is not None

    async def note_error(self, order_id: UUID, detail: str) -> None:
        await self.execute(
            "UPDATE payment.refunds SET last_error = :d WHERE order_id = :id", {"id": order_id, "d": detail}
        )
