"""Payment routes at the edge: the payment URL of a held order, VNPAY's IPN webhook and its return URL.

The IPN handler trusts nothing before the signature passes (constant-time compare) and records nothing
itself: the gateway owns no payment tables. A verified notification is sent to the payment service's quorum
queue with a publisher confirm and the handler waits briefly for the service's answer (it records the result
once, keyed by provider and reference, and answers 00 or 02). If the answer is late, the confirmed message is
already durable, so the answer is 00 and the service applies it when it can.

Payment URL: the first attempt's reference is derived from the order id, and its vnp_CreateDate is the
order's creation time, so the gateway signs the URL itself the moment the hold is decided; the payment
service registers the same attempt when it sees order.held and can query it later (querydr needs both).
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import Counter
from sqlalchemy import text

from shared import logs
from shared.messages import NotificationAnswered, OrderStatus, OrderView, PaymentNotified
from shared.payments import answers, providers
from shared.payments.providers.base import NotANotification, Outcome, PaymentAttempt, PaymentProvider
from shared.payments.providers.vnpay import rsp

router = APIRouter(tags=["payments"])
IPN_ANSWERS = Counter("ticketing_payment_ipn_answers_total", "IPN answers given, by RspCode", ["code"])
log = logs.get_logger(__name__)

IPN_ANSWER_WAIT_SECONDS = 3.0  # well inside an IPN caller's timeout; the message is durable either way
STATUS_TEXT = {
    "PENDING": "Dang xu ly thanh toan / Payment is being processed",
    "PAID": "Thanh toan thanh cong / Paid: your tickets are on the way",
    "EXPIRED": "Don hang da het han / The hold expired",
    "CANCELLED": "Don hang da huy / Cancelled",
    "REFUND_PENDING": "Dang hoan tien / The tickets were gone: your money is being refunded",
    "REFUNDED": "Da hoan tien / Refunded",
}


def _provider(request: Request) -> PaymentProvider:
    state = request.app.state
    if getattr(state, "payment_provider", None) is None:
        state.payment_provider = providers.from_settings(state.settings)
    return state.payment_provider  # type: ignore[no-any-return]


async def payment_url_for(request: Request, view: OrderView, just_held: bool = False) -> str | None:
    """The signed URL of the order's current payment attempt, while the order is PENDING.

    An order held by this very request can only be at attempt 1, which is derived from the order alone: the
    hot path of a checkout makes no database read for it.
    """
    if not _payable(view):
        return None
    latest = None if just_held else (await _latest_attempts(request, [view.order_id])).get(view.order_id)
    return _payment_url(request, view, latest)


async def payment_urls_for(request: Request, views: list[OrderView]) -> dict[uuid.UUID, str | None]:
    """``payment_url_for`` of a page of orders, with one read for all of them."""
    pending = [v for v in views if _payable(v)]
    latest = await _latest_attempts(request, [v.order_id for v in pending]) if pending else {}
    return {v.order_id: _payment_url(request, v, latest.get(v.order_id)) for v in pending}


def _payable(view: OrderView) -> bool:
    return view.status is OrderStatus.PENDING and view.expires_at is not None and view.created_at is not None


async def _latest_attempts(request: Request, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """Each order's latest payment attempt (attempt, status, created_at); orders with none are missing."""
    async with request.app.state.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT DISTINCT ON (order_id) order_id, attempt, status, created_at FROM read_api.payment_attempts "
                "WHERE order_id = ANY(:ids) ORDER BY order_id, attempt DESC"
            ),
            {"ids": order_ids},
        )
        return {r.order_id: r for r in rows}


def _payment_url(request: Request, view: OrderView, latest: Any | None) -> str | None:
    assert view.expires_at is not None and view.created_at is not None
    attempt, created_at = 1, view.created_at
    if latest is not None:
        if latest.status != "STARTED":  # paid, under review or abandoned: nothing more to pay
            return None
        attempt, created_at = latest.attempt, latest.created_at
    return _provider(request).payment_url(
        PaymentAttempt(
            order_id=view.order_id,
            attempt=attempt,
            amount=view.total,
            created_at=created_at,
            expires_at=view.expires_at,
            description=f"Thanh toan ve don hang {view.order_id.hex[:12]}",
            client_ip=request.client.host if request.client else "127.0.0.1",
        )
    )


def _single_values(request: Request) -> dict[str, str] | None:
    """The query parameters, or None when a name repeats (ambiguous: which value was signed?)."""
    items = request.query_params.multi_items()
    params = dict(items)
    return params if len(params) == len(items) else None


async def _order_facts(request: Request, order_id: uuid.UUID) -> answers.OrderFacts | None:
    async with request.app.state.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT total, status, created_at, expires_at FROM read_api.orders WHERE id = :id"),
                {"id": order_id},
            )
        ).first()
    return answers.OrderFacts(row.total, row.status, row.created_at, row.expires_at) if row else None


async def _recorded_outcome(request: Request, txn_ref: str) -> Outcome | None:
    async with request.app.state.engine.connect() as conn:
        outcome = (
            await conn.execute(
                text("SELECT recorded_outcome FROM read_api.payment_attempts WHERE txn_ref = :r"), {"r": txn_ref}
            )
        ).scalar_one_or_none()
    return None if outcome is None else Outcome(outcome)


def _answer(code: str) -> JSONResponse:
    IPN_ANSWERS.labels(code=code).inc()
    return JSONResponse(rsp(code))


@router.get("/payments/vnpay/ipn", summary="VNPAY IPN (server to server); answers VNPAY's RspCode JSON")
async def vnpay_ipn(request: Request) -> JSONResponse:
    params = _single_values(request)
    provider = _provider(request)
    if params is None or not provider.verify(params):
        log.warning("ipn_bad_signature", client=request.client.host if request.client else None)
        return _answer(answers.BAD_SIGNATURE)
    try:
        n = provider.notification(params)
        refusal = answers.precheck(n, await _order_facts(request, n.order_id))
        if refusal is not None:
            return _answer(refusal)
        recorded = await _recorded_outcome(request, n.txn_ref)
        # A success must reach the payment service even over a recorded failure: it replaces it there.
        if recorded is not None and not answers.supersedes(n.outcome, recorded):
            return _answer(answers.ALREADY_CONFIRMED)
        msg = PaymentNotified(provider=provider.name, params=params, received_at=datetime.now(UTC))
        result = await request.app.state.requester.request(msg, NotificationAnswered, timeout=IPN_ANSWER_WAIT_SECONDS)
    except NotANotification as exc:  # signed by us, e.g. a payment URL replayed: not VNPAY's, changes nothing
        log.warning("ipn_not_a_result", client=request.client.host if request.client else None, reason=str(exc))
        return _answer(answers.BAD_SIGNATURE)
    except ValueError:
        return _answer(answers.UNKNOWN_ORDER)  # signed by VNPAY but not one of our references
    except Exception as exc:  # not durably recorded: 99 makes VNPAY retry
        log.error("ipn_not_recorded", error=repr(exc))
        return _answer(answers.OTHER_ERROR)
    if result is None:  # confirmed by the broker's quorum queue: durable, applied when the service gets to it
        return _answer(answers.RECORDED)
    code = result.code if result.code in ("00", "01", "02", "04", "97") else answers.OTHER_ERROR
    return _answer(code)


@router.get("/payments/vnpay/return", summary="Where VNPAY sends the buyer back: shows the order, changes nothing")
async def vnpay_return(request: Request) -> Response:
    params = _single_values(request)
    provider = _provider(request)
    wants_json = "application/json" in request.headers.get("accept", "")
    if params is None or not provider.verify(params):
        body: dict[str, Any] = {"valid": False, "detail": "invalid signature"}
        return JSONResponse(body, status_code=400) if wants_json else HTMLResponse(_page("Invalid signature"), 400)
    try:
        n = provider.notification(params)
    except NotANotification:
        body = {"valid": False, "detail": "not a payment result"}
        return JSONResponse(body, status_code=400) if wants_json else HTMLResponse(_page("Invalid payment result"), 400)
    except ValueError:
        return JSONResponse({"valid": True, "detail": "unknown order"}, status_code=404)
    facts = await _order_facts(request, n.order_id)
    if facts is None:
        return JSONResponse({"valid": True, "detail": "unknown order"}, status_code=404)
    # What the provider said is shown as such; the order's status is ours, and only the IPN changes it.
    body = {
        "valid": True,
        "order_id": str(n.order_id),
        "status": facts.status,
        "provider_result": n.outcome.value,
        "response_code": n.response_code,
    }
    if wants_json:
        return JSONResponse(body)
    return HTMLResponse(_page(STATUS_TEXT.get(facts.status, facts.status), str(n.order_id)))


def _page(message: str, order_id: str = "") -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ticketing</title></head><body>"
        f"<h1>{html.escape(message)}</h1><p>{html.escape(order_id)}</p></body></html>"
    )
