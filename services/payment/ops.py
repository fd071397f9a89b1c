"""Payment operator actions, owned by the payment service (the only writer of the payment schema).

Reached by ``command.payment_op`` (request/reply) from the gateway's /admin/payments endpoints and from
``ticketing payments``. Every action is audited in ``payment.audit_log``, no-ops and refusals included.

* accept a REVIEW attempt: applied exactly as a successful payment, i.e. the same ``payment.succeeded`` (same
  message id) the IPN path would have published, so inventory's on-time and late-sale rules decide the order;
* reject a REVIEW attempt: the provider is asked to refund that transaction in full; the order is untouched
  (its hold expires as usual);
* retry a refund the provider refused or that failed (late-payment refunds and review refunds alike).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.payment.domain import AttemptStatus, RefundRecordStatus
from services.payment.handlers import Payments
from services.payment.metrics import OPERATOR_ACTIONS, REFUNDS
from services.payment.uow import PaymentUnitOfWork
from shared import logs
from shared.messages import PaymentOp, PaymentOpAction, PaymentOpAnswered, PaymentOpOutcome, PaymentSucceeded
from shared.messaging import Delivery
from shared.payments.providers.base import RefundRequest, RefundResult, RefundStatus

log = logs.get_logger(__name__)


@dataclass
class PaymentOps:
    payments: Payments

    async def on_payment_op(self, msg: PaymentOp, delivery: Delivery) -> None:
        result = await self.handle(msg)
        OPERATOR_ACTIONS.labels(action=msg.action.value, result=result.outcome.value).inc()
        await self.payments.bus.reply(delivery, result)

    async def handle(self, msg: PaymentOp) -> PaymentOpAnswered:
        match msg.action:
            case PaymentOpAction.LIST_REVIEW:
                async with self.payments.new_uow() as uow:
                    return PaymentOpAnswered(outcome=PaymentOpOutcome.DONE, items=await uow.reviews.listed(msg.limit))
            case PaymentOpAction.LIST_FAILED_REFUNDS:
                async with self.payments.new_uow() as uow:
                    items = await uow.failed_refunds.listed(msg.limit)
                    return PaymentOpAnswered(outcome=PaymentOpOutcome.DONE, items=items)
            case PaymentOpAction.ACCEPT:
                return await self.accept(msg.actor, msg.target)
            case PaymentOpAction.REJECT:
                return await self.reject(msg.actor, msg.target)
            case PaymentOpAction.RETRY_REFUND:
                return await self.retry_refund(msg.actor, msg.target)
        raise AssertionError(msg.action)  # pragma: no cover (the enum is exhaustive)

    async def _not_in_review(self, uow: PaymentUnitOfWork, actor: str, action: str, txn_ref: str) -> PaymentOpAnswered:
        """Why an accept or reject changed nothing, audited (the caller commits: a refusal is audited too)."""
        status = await uow.reviews.attempt_status(txn_ref)
        if status is None:
            await uow.audit.record(actor, action, txn_ref, "not_found")
            return PaymentOpAnswered(outcome=PaymentOpOutcome.NOT_FOUND, detail=f"no payment attempt {txn_ref}")
        await uow.audit.record(actor, action, txn_ref, "no_op", f"attempt is {status}")
        return PaymentOpAnswered(
            outcome=PaymentOpOutcome.WRONG_STATE, detail=f"attempt {txn_ref} is {status}, not REVIEW"
        )

    async def accept(self, actor: str, txn_ref: str) -> PaymentOpAnswered:
        async with self.payments.new_uow() as uow:
            d = await uow.reviews.decide(txn_ref, AttemptStatus.ACCEPTED)
            if d is None:
                refused = await self._not_in_review(uow, actor, "accept", txn_ref)
                await uow.commit()  # a refusal is audited too
                return refused
            # Same event and message id as an IPN success: inventory cannot tell (and need not) that a human
            # decided, and a duplicate is deduplicated like any other.
            uow.emit(
                [
                    PaymentSucceeded(
                        order_id=d.order_id,
                        provider=d.provider,
                        txn_ref=d.txn_ref,
                        amount=d.amount,
                        provider_txn_no=d.provider_txn_no,
                        paid_at=d.paid_at or await uow.now(),
                    )
                ]
            )
            await uow.audit.record(actor, "accept", txn_ref, "accepted", f"order {d.order_id}")
            await uow.commit()
        log.info("review_accepted", txn_ref=txn_ref, order_id=str(d.order_id), actor=actor)
        return PaymentOpAnswered(
            outcome=PaymentOpOutcome.DONE,
            detail="accepted: applied as a successful payment",
            items=[{"txn_ref": txn_ref, "order_id": str(d.order_id), "attempt_status": "ACCEPTED"}],
        )

    async def reject(self, actor: str, txn_ref: str) -> PaymentOpAnswered:
        async with self.payments.new_uow() as uow:
            d = await uow.reviews.decide(txn_ref, AttemptStatus.REJECTED)
            if d is None:
                refused = await self._not_in_review(uow, actor, "reject", txn_ref)
                await uow.commit()
                return refused
            # Recorded before the provider is called: a crash in between leaves a REQUESTED row that the failed
            # list shows once stale, so the refund is never forgotten.
            await uow.reviews.request_refund(d)
            await uow.audit.record(actor, "reject", txn_ref, "rejected", f"order {d.order_id}")
            await uow.commit()
        log.info("review_rejected", txn_ref=txn_ref, order_id=str(d.order_id), actor=actor)
        status, detail = await self._refund_review(actor, txn_ref)
        return PaymentOpAnswered(
            outcome=PaymentOpOutcome.DONE,
            detail=f"rejected; refund {status}: {detail}",
            items=[
                {
                    "txn_ref": txn_ref,
                    "order_id": str(d.order_id),
                    "attempt_status": "REJECTED",
                    "refund_status": status,
                    "refund_detail": detail,
                }
            ],
        )

    async def _refund_review(self, actor: str, txn_ref: str) -> tuple[str, str]:
        """Ask the provider to refund a rejected review (the row is REQUESTED and ours); record the outcome."""
        async with self.payments.new_uow() as uow:
            d = await uow.reviews.refund_request(txn_ref)
        assert d is not None
        provider = self.payments.providers[d.provider]
        try:
            result = await provider.refund(
                RefundRequest(d.txn_ref, d.amount, d.provider_txn_no, d.created_at, "rejected after review")
            )
            if result.status is RefundStatus.IN_PROGRESS:  # "already requested": was our earlier try answered?
                known = await provider.query(d.txn_ref, d.created_at)
                if known.refunded:
                    result = RefundResult(RefundStatus.CONFIRMED, "refund confirmed by querydr", result.raw)
        except Exception as exc:  # recorded as FAILED so an operator sees it and can retry
            result = RefundResult(RefundStatus.ERROR, f"{type(exc).__name__}: {exc}")
        REFUNDS.labels(status=result.status.value).inc()
        status = RefundRecordStatus.CONFIRMED if result.status is RefundStatus.CONFIRMED else RefundRecordStatus.FAILED
        detail = result.detail or result.status.value
        async with self.payments.new_uow() as uow:
            await uow.reviews.finish_refund(txn_ref, status, detail, result.raw)
            await uow.audit.record(actor, "refund", txn_ref, status.lower(), detail)
            await uow.commit()
        if status is RefundRecordStatus.FAILED:
            log.error("review_refund_failed", txn_ref=txn_ref, detail=detail)
        return status, detail

    async def retry_refund(self, actor: str, txn_ref: str) -> PaymentOpAnswered:
        async with self.payments.new_uow() as uow:
            claimed = await uow.reviews.claim_refund_retry(txn_ref)
            order_id = None if claimed else await uow.failed_refunds.reopen(txn_ref)
            if not claimed and order_id is None:
                refused = await self._not_failed(uow, actor, txn_ref)
                await uow.commit()  # a refusal is audited too
                return refused
            await uow.audit.record(actor, "retry_refund", txn_ref, "retrying")
            await uow.commit()
        if claimed:
            status, detail = await self._refund_review(actor, txn_ref)
        else:
            # A late-payment refund goes back through the normal path (which tells inventory when confirmed).
            assert order_id is not None
            await self.payments.refund_due(order_id=order_id)
            async with self.payments.new_uow() as uow:
                status, detail = await uow.failed_refunds.status(txn_ref) or ("UNKNOWN", "")
                await uow.audit.record(actor, "refund", txn_ref, status.lower(), detail)
                await uow.commit()
        outcome = PaymentOpOutcome.DONE if status == RefundRecordStatus.CONFIRMED else PaymentOpOutcome.PROVIDER_FAILED
        return PaymentOpAnswered(
            outcome=outcome,
            detail=f"refund {status}: {detail}",
            items=[{"txn_ref": txn_ref, "refund_status": status, "refund_detail": detail}],
        )

    async def _not_failed(self, uow: PaymentUnitOfWork, actor: str, txn_ref: str) -> PaymentOpAnswered:
        """Why a retry changed nothing, audited (the caller commits)."""
        current = await uow.reviews.refund_status(txn_ref) or await uow.failed_refunds.status(txn_ref)
        if current is None:
            await uow.audit.record(actor, "retry_refund", txn_ref, "not_found")
            return PaymentOpAnswered(outcome=PaymentOpOutcome.NOT_FOUND, detail=f"no refund for {txn_ref}")
        await uow.audit.record(actor, "retry_refund", txn_ref, "no_op", f"refund is {current[0]}")
        return PaymentOpAnswered(
            outcome=PaymentOpOutcome.WRONG_STATE, detail=f"refund of {txn_ref} is {current[0]}, not failed"
        )
