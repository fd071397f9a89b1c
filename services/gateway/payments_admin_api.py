"""Admin-only payment operations over HTTP (/admin/payments): the same actions as `ticketing payments`.

The gateway owns no payment tables: each call is a ``command.payment_op`` to the payment service (request/reply
over RabbitMQ), which applies it with a guarded UPDATE and audits it under the caller's name.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from services.gateway import commands
from services.gateway.auth import AdminUser, User
from services.gateway.edge import EdgeRoute
from services.gateway.problems import Problem
from shared.messages import PaymentOp, PaymentOpAction, PaymentOpAnswered, PaymentOpOutcome

router = APIRouter(prefix="/admin/payments", tags=["payment operations"], route_class=EdgeRoute)

# A reject or retry waits for the provider's refund answer (its own timeout is a few seconds).
OP_WAIT_SECONDS = 20.0
TxnRef = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,64}$", description="The provider reference (vnp_TxnRef)")]
# How each refusal is answered: HTTP status, title, problem type.
_REFUSALS = {
    PaymentOpOutcome.NOT_FOUND: (404, "Not found", "not-found"),
    PaymentOpOutcome.WRONG_STATE: (409, "Refused", "conflict"),
    PaymentOpOutcome.PROVIDER_FAILED: (502, "Provider refused", "provider-refused"),
}


async def payment_op(
    state: Any, user: User, action: PaymentOpAction, target: str = "", limit: int = 100
) -> PaymentOpAnswered:
    """Ask the payment service (API and console); refusals and time-outs are raised as problems."""
    cmd = PaymentOp(action=action, actor=f"user:{user.id}", target=target, limit=limit)
    result = await commands.ask(state, cmd, PaymentOpAnswered, OP_WAIT_SECONDS)
    if result is None:
        # The command is durable and will be applied; its outcome shows in the lists and the audit table.
        raise Problem(504, "Timed out", "the payment service has not answered yet; check the list again", "timeout")
    if result.outcome is not PaymentOpOutcome.DONE:
        status, title, kind = _REFUSALS[result.outcome]
        raise Problem(status, title, result.detail or "refused", kind, items=result.items or [])
    return result


@router.get("/review")
async def review(request: Request, user: AdminUser, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Payment attempts held for review (VNPAY 07: money taken, order not paid)."""
    return (await payment_op(request.app.state, user, PaymentOpAction.LIST_REVIEW, limit=limit)).items or []


@router.post("/review/{txn_ref}/accept")
async def accept(request: Request, txn_ref: TxnRef, user: AdminUser) -> dict[str, Any]:
    """Apply the payment as a success (PAID, or a late sale's refund when the stock is gone). 409 if decided."""
    result = await payment_op(request.app.state, user, PaymentOpAction.ACCEPT, txn_ref)
    return {"detail": result.detail, **(result.items or [{}])[0]}


@router.post("/review/{txn_ref}/reject")
async def reject(request: Request, txn_ref: TxnRef, user: AdminUser) -> dict[str, Any]:
    """Refund the payment in full; the order is untouched and its hold expires. 409 if decided."""
    result = await payment_op(request.app.state, user, PaymentOpAction.REJECT, txn_ref)
    return {"detail": result.detail, **(result.items or [{}])[0]}


@router.get("/refunds/failed")
async def failed_refunds(
    request: Request, user: AdminUser, limit: int = Query(100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """Refunds the provider refused (late payments) or that failed (rejected reviews)."""
    return (await payment_op(request.app.state, user, PaymentOpAction.LIST_FAILED_REFUNDS, limit=limit)).items or []


@router.post("/refunds/{txn_ref}/retry")
async def retry_refund(request: Request, txn_ref: TxnRef, user: AdminUser) -> dict[str, Any]:
    """Ask the provider again; 502 (problem) if it still refuses, 409 if the refund is not failed."""
    result = await payment_op(request.app.state, user, PaymentOpAction.RETRY_REFUND, txn_ref)
    return {"detail": result.detail, **(result.items or [{}])[0]}
