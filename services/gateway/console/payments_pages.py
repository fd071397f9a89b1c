"""Console pages for payment operator actions: attempts held for review (accept, reject) and failed refunds
(retry), through the same calls to the payment service as the JSON admin API (payments_admin_api.payment_op)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from services.gateway.console.rendering import problem_fragment, render
from services.gateway.console.session import ConsoleAdmin, ConsoleForm
from services.gateway.payments_admin_api import payment_op
from services.gateway.problems import Problem
from shared.messages import PaymentOpAction

router = APIRouter()
TxnRef = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,64}$")]
DONE_TEXT = {
    PaymentOpAction.ACCEPT: "Accepted",
    PaymentOpAction.REJECT: "Rejected and refunded",
    PaymentOpAction.RETRY_REFUND: "Refund retried",
}


@router.get("/payments")
async def payments(request: Request, user: ConsoleAdmin) -> Response:
    state = request.app.state
    review, refunds, review_error, refunds_error = [], [], "", ""
    try:
        review = (await payment_op(state, user, PaymentOpAction.LIST_REVIEW)).items or []
    except Problem as problem:
        review_error = problem.detail
    try:
        refunds = (await payment_op(state, user, PaymentOpAction.LIST_FAILED_REFUNDS)).items or []
    except Problem as problem:
        refunds_error = problem.detail
    return render(
        request, "payments.html", review=review, refunds=refunds, review_error=review_error, refunds_error=refunds_error
    )


async def _act(request: Request, user: ConsoleAdmin, action: PaymentOpAction, txn_ref: str) -> Response:
    try:
        result = await payment_op(request.app.state, user, action, txn_ref)
    except Problem as problem:
        return problem_fragment(request, problem)
    return render(request, "_message.html", kind="info", title=DONE_TEXT[action], text=result.detail or txn_ref)


@router.post("/payments/review/{txn_ref}/accept")
async def accept(request: Request, user: ConsoleAdmin, form: ConsoleForm, txn_ref: TxnRef) -> Response:
    return await _act(request, user, PaymentOpAction.ACCEPT, txn_ref)


@router.post("/payments/review/{txn_ref}/reject")
async def reject(request: Request, user: ConsoleAdmin, form: ConsoleForm, txn_ref: TxnRef) -> Response:
    return await _act(request, user, PaymentOpAction.REJECT, txn_ref)


@router.post("/payments/refunds/{txn_ref}/retry")
async def retry(request: Request, user: ConsoleAdmin, form: ConsoleForm, txn_ref: TxnRef) -> Response:
    return await _act(request, user, PaymentOpAction.RETRY_REFUND, txn_ref)
