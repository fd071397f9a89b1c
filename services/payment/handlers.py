"""The payment service's consumers and periodic jobs: record provider results once, reconcile, refund.

A notification (IPN, via the gateway) and a querydr answer (reconciliation) take the same path, ``apply``:
the row in ``payment.transactions`` keyed by (provider, reference) is the at-most-once guard, and a success
is handed to inventory as ``payment.succeeded`` through this service's outbox, in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.payment import domain, store
from services.payment.metrics import PAYMENT_CONTRADICTIONS, PAYMENT_RESULTS, RECONCILE_QUERIES, REFUNDS
from services.payment.uow import PaymentUnitOfWork
from shared import logs
from shared.batching import GroupCommit
from shared.messages import (
    NotificationAnswered,
    OrderHeld,
    OrderRefundPending,
    OrdersHeld,
    PaymentNotified,
    PaymentRefunded,
    PaymentSucceeded,
)
from shared.messaging import Bus, Delivery
from shared.outbox import OutboxRelay
from shared.payments import answers
from shared.payments.providers.base import (
    NotANotification,
    Notification,
    Outcome,
    PaymentProvider,
    QueryStatus,
    RefundRequest,
    RefundResult,
    RefundStatus,
)
from shared.settings import Settings

log = logs.get_logger(__name__)


@dataclass
class Payments:
    engine: AsyncEngine
    bus: Bus
    relay: OutboxRelay
    providers: dict[str, PaymentProvider]
    settings: Settings
    attempts: GroupCommit[OrdersHeld, None] = field(init=False)

    def __post_init__(self) -> None:
        # A flash sale holds hundreds of orders a second: register their attempts in shared transactions.
        self.attempts = GroupCommit("attempt-registrar", self._register_attempts, max_batch=256)

    def new_uow(self) -> PaymentUnitOfWork:
        return PaymentUnitOfWork(self.engine, "payment", self.relay)

    # --- attempts ---------------------------------------------------------------------------------

    async def on_orders_held(self, msg: OrdersHeld, delivery: Delivery) -> None:
        """Every order a hold batch held got a payment URL for attempt 1: register them, so reconciliation can
        ask about them (a redelivery registers nothing twice: an attempt's reference is its key)."""
        await self.attempts.submit(msg)

    async def on_order_held(self, msg: OrderHeld, delivery: Delivery) -> None:
        """One held order, as inventories before ``orders.held`` sent it."""
        await self.attempts.submit(OrdersHeld(orders=[msg]))

    async def _register_attempts(self, batches: Sequence[OrdersHeld], _: Sequence[str]) -> list[None]:
        provider = self._default_provider()
        held = [order for batch in batches for order in batch.orders]
        async with self.new_uow() as uow:
            created = await uow.orders.created_at([o.order_id for o in held])
            missing = [o.order_id for o in held if o.order_id not in created]
            if missing:  # orders.held is published after inventory's commit, so this is a replica lag
                raise RuntimeError(f"order {missing[0]} not visible yet")  # retried alone, then the ladder
            # The attempt's vnp_CreateDate is the order's creation time: what the gateway signed, and what
            # querydr must be given back as vnp_TransactionDate.
            await uow.attempts.register(
                provider.name,
                [
                    store.NewAttempt(
                        provider.txn_ref(o.order_id, 1), o.order_id, 1, o.total, created[o.order_id], o.expires_at
                    )
                    for o in held
                ],
            )
            await uow.commit()
        return [None] * len(batches)

    # --- notifications ----------------------------------------------------------------------------

    async def on_payment_notified(self, msg: PaymentNotified, delivery: Delivery) -> None:
        await self.bus.reply(delivery, NotificationAnswered(code=await self.notified(msg)))

    async def notified(self, msg: PaymentNotified) -> str:
        provider = self.providers.get(msg.provider)
        # Verified again here: the queue is not a trust boundary we rely on.
        if provider is None or not provider.verify(msg.params):
            log.warning("notification_bad_signature", provider=msg.provider)
            return answers.BAD_SIGNATURE
        try:
            n = provider.notification(msg.params)
        except NotANotification as exc:
            log.warning("notification_not_a_result", provider=msg.provider, error=str(exc))
            return answers.BAD_SIGNATURE
        except ValueError as exc:
            log.warning("notification_unparseable", provider=msg.provider, error=str(exc))
            return answers.UNKNOWN_ORDER
        return await self.apply(n, "ipn")

    async def apply(self, n: Notification, source: str) -> str:
        async with self.new_uow() as uow:
            facts = await uow.orders.facts(n.order_id)
            refusal = answers.precheck(n, facts)
            if refusal is not None:
                log.warning("notification_refused", txn_ref=n.txn_ref, code=refusal, source=source)
                return refusal
            assert facts is not None and facts.expires_at is not None
            await uow.attempts.register_one(
                n.provider, n.txn_ref, n.order_id, n.attempt, n.amount, facts.created_at, facts.expires_at
            )
            if not await uow.results.record(n, source):
                recorded = await uow.results.recorded(n.provider, n.txn_ref)
                if recorded is None or not answers.supersedes(n.outcome, recorded):
                    return answers.ALREADY_CONFIRMED
                # The record said the payment failed; the provider now says the money was taken. Its word wins,
                # or a buyer would pay and never get the tickets (nor a refund).
                await uow.results.supersede(n, source)
                PAYMENT_CONTRADICTIONS.labels(provider=n.provider, source=source).inc()
                log.error(
                    "payment_record_contradicted",
                    txn_ref=n.txn_ref,
                    order_id=str(n.order_id),
                    recorded=recorded.value,
                    now=n.outcome.value,
                    source=source,
                )
            else:
                await uow.attempts.settle(n.txn_ref, domain.attempt_status(n.outcome))
            following = domain.next_attempt(n, facts)
            if following is not None:
                provider = self.providers[n.provider]
                await uow.attempts.register_one(
                    n.provider,
                    provider.txn_ref(n.order_id, following),
                    n.order_id,
                    following,
                    n.amount,
                    await uow.now(),
                    facts.expires_at,
                )
            if n.outcome is Outcome.SUCCEEDED:
                paid_at = n.paid_at or await uow.now()
                uow.emit(
                    [
                        PaymentSucceeded(
                            order_id=n.order_id,
                            provider=n.provider,
                            txn_ref=n.txn_ref,
                            amount=n.amount,
                            provider_txn_no=n.provider_txn_no,
                            paid_at=paid_at,
                        )
                    ]
                )
            await uow.commit()
        if n.outcome is Outcome.REVIEW:
            log.warning(
                "payment_held_for_review",
                txn_ref=n.txn_ref,
                order_id=str(n.order_id),
                response_code=n.response_code,
                transaction_status=n.transaction_status,
            )
        PAYMENT_RESULTS.labels(provider=n.provider, outcome=n.outcome.value, source=source).inc()
        log.info("payment_recorded", txn_ref=n.txn_ref, outcome=n.outcome.value, source=source)
        return answers.RECORDED

    # --- reconciliation ---------------------------------------------------------------------------

    async def reconcile_once(self) -> int:
        """querydr the attempts near or past expiry with no result; apply what the provider knows. Applied count."""
        s = self.settings
        async with self.new_uow() as uow:  # the claim commits before the provider is asked
            due = await uow.attempts.claim_to_reconcile(
                s.payment_reconcile_lead_seconds,
                s.payment_reconcile_interval_seconds,
                s.payment_reconcile_window_seconds,
            )
            await uow.commit()
        applied = 0
        for attempt in due:
            provider = self.providers.get(attempt.provider)
            if provider is None:
                continue
            result = await provider.query(attempt.txn_ref, attempt.created_at)
            RECONCILE_QUERIES.labels(status=result.status.value).inc()
            if result.status is QueryStatus.FOUND and result.notification is not None:
                code = await self.apply(result.notification, "querydr")
                applied += code == answers.RECORDED
                log.info("reconciled", txn_ref=attempt.txn_ref, code=code)
                if attempt.status == "FAILED" and code in (answers.RECORDED, answers.ALREADY_CONFIRMED):
                    await self._confirm_outcome(attempt.txn_ref)  # the provider has spoken on this failure
            elif result.status is QueryStatus.NOT_FOUND and attempt.status == "FAILED":
                await self._confirm_outcome(attempt.txn_ref)  # no money there: the recorded failure stands
            elif result.status is QueryStatus.NOT_FOUND and domain.abandoned(
                attempt.expires_at, datetime.now(UTC), s.payment_reconcile_window_seconds
            ):
                async with self.new_uow() as uow:
                    await uow.attempts.abandon(attempt.txn_ref)
                    await uow.commit()
            elif result.status is QueryStatus.ERROR:
                log.warning("reconcile_query_failed", txn_ref=attempt.txn_ref, detail=result.detail)
        return applied

    async def _confirm_outcome(self, txn_ref: str) -> None:
        async with self.new_uow() as uow:
            await uow.attempts.confirm_outcome(txn_ref)
            await uow.commit()

    # --- refunds ----------------------------------------------------------------------------------

    async def on_refund_pending(self, msg: OrderRefundPending, delivery: Delivery) -> None:
        async with self.new_uow() as uow:
            paid = await uow.results.paid(msg.order_id)
            if paid is None:
                raise RuntimeError(f"no recorded payment for order {msg.order_id} yet")  # retried by the ladder
            await uow.refunds.request(msg.order_id, paid, msg.reason)
            await uow.commit()
        await self.refund_due(order_id=msg.order_id)

    async def refund_due(self, order_id: uuid.UUID | None = None) -> int:
        """Ask the provider for every refund that is due (or one order's); confirmed ones go to inventory."""
        async with self.new_uow() as uow:  # the claim commits before the provider is asked
            due = await uow.refunds.claim_due(self.settings.payment_refund_retry_seconds, order_id)
            await uow.commit()
        confirmed = 0
        for r in due:
            provider = self.providers[r.provider]
            result = await provider.refund(
                RefundRequest(r.txn_ref, r.amount, r.provider_txn_no, r.transaction_date, r.reason)
            )
            if result.status is RefundStatus.IN_PROGRESS:
                # "Already requested": our earlier request may have succeeded with its answer lost. Ask.
                known = await provider.query(r.txn_ref, r.transaction_date)
                if known.refunded:
                    result = RefundResult(RefundStatus.CONFIRMED, "refund confirmed by querydr", result.raw)
            REFUNDS.labels(status=result.status.value).inc()
            async with self.new_uow() as uow:
                if result.status is RefundStatus.CONFIRMED:
                    if await uow.refunds.finish(
                        r.order_id, domain.RefundRecordStatus.CONFIRMED, result.detail, result.raw
                    ):
                        uow.emit(
                            [
                                PaymentRefunded(
                                    order_id=r.order_id,
                                    provider=r.provider,
                                    txn_ref=r.txn_ref,
                                    amount=r.amount,
                                    refunded_at=await uow.now(),
                                    detail=r.reason,
                                )
                            ]
                        )
                        confirmed += 1
                elif result.status is RefundStatus.REFUSED:
                    # The provider will not refund (it holds no successful payment): a human must look.
                    await uow.refunds.finish(r.order_id, domain.RefundRecordStatus.FAILED, result.detail, result.raw)
                    log.error("refund_refused", order_id=str(r.order_id), txn_ref=r.txn_ref, detail=result.detail)
                else:  # in progress or a transient error: the claim already scheduled the next try
                    await uow.refunds.note_error(r.order_id, result.detail)
                    log.warning("refund_not_confirmed_yet", order_id=str(r.order_id), detail=result.detail)
                await uow.commit()
        return confirmed

    def _default_provider(self) -> PaymentProvider:
        return next(iter(self.providers.values()))
