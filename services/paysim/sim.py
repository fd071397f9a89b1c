"""The offline VNPAY 2.1.0 simulator: the payment page, the signed IPN with VNPAY's retry rule, the browser
redirect to the return URL, and the merchant API (querydr, refund), all with the same signing code as the
real integration (services/payment/providers/vnpay.py), so what passes here passes the same checks there.

Test-only controls (``/_control/...``) make the next IPN of a reference late, duplicated, concurrent or lost,
hide it from querydr, or slow a refund. The simulator refuses to start in production (settings validator and
``create_app``), and it keeps its state in memory: it is a stand-in for a remote system, not a store.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from shared import logs
from shared.payments.providers import vnpay
from shared.settings import Settings

log = logs.get_logger(__name__)

CONFIRM_PATH = "/paymentv2/confirm"
PAY_PATH = "/paymentv2/vpcpay.html"
API_PATH = "/merchant_webapi/api/transaction"


class Fault(BaseModel):
    """What to do with the IPN of one reference (or of every reference, with txn_ref '*')."""

    txn_ref: str = "*"
    ipn: str = Field("send", pattern="^(send|drop|duplicate|concurrent)$")
    copies: int = Field(3, ge=1, le=10)  # for duplicate / concurrent
    delay_seconds: float = Field(0.0, ge=0, le=600)
    hide_from_query: bool = False  # querydr answers 91 (not found) for it
    refund_delay_seconds: float = Field(0.0, ge=0, le=30)
    refund_answer_lost: bool = False  # refund, then fail the HTTP answer once (the caller must find out)
    refund_refused: bool = False  # answer a refund with 95 (refused), as an operator's retry case needs


class AnswerLost(Exception):
    """The simulated network dropped the answer after the work was done."""


@dataclass
class Txn:
    txn_ref: str
    pay_params: dict[str, str]
    response_code: str
    transaction_status: str
    transaction_no: str
    pay_date: str
    refunded: bool = False
    ipn_calls: list[dict[str, Any]] = field(default_factory=list)


class Simulator:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret = settings.vnpay_hash_secret.get_secret_value()
        self.txns: dict[str, Txn] = {}
        self.faults: dict[str, Fault] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = int(time.time()) % 10_000_000

    def fault_for(self, txn_ref: str) -> Fault:
        return self.faults.get(txn_ref) or self.faults.get("*") or Fault.model_validate({})

    # --- payment ----------------------------------------------------------------------------------

    def check_request(self, params: dict[str, str]) -> str | None:
        """Why VNPAY would refuse this payment request, or None."""
        if not vnpay.verify_params(self.secret, params):
            return "Sai chu ky (invalid signature)"
        if params.get("vnp_TmnCode") != self.settings.vnpay_tmn_code:
            return "Terminal not found"
        if params.get("vnp_Version") != vnpay.VERSION or params.get("vnp_Command") != "pay":
            return "Unsupported version or command"
        expires = vnpay.parse_vn_time(params.get("vnp_ExpireDate", ""))
        if expires is None or expires < datetime.now(UTC).replace(microsecond=0):
            return "Giao dich da qua thoi gian cho thanh toan (payment window expired)"
        return None

    def complete(self, params: dict[str, str], approve: bool, code: str | None) -> Txn:
        txn_ref = params["vnp_TxnRef"]
        existing = self.txns.get(txn_ref)
        if existing is not None:  # VNPAY takes one payment per reference
            return existing
        self._seq += 1
        response_code = code or ("00" if approve else "24")
        status = "00" if response_code == "00" else ("07" if response_code == "07" else "02")
        txn = Txn(txn_ref, params, response_code, status, str(self._seq), vnpay.vn_time(datetime.now(UTC)))
        self.txns[txn_ref] = txn
        self._spawn(self.deliver_ipn(txn, self.fault_for(txn_ref)))
        return txn

    def result_params(self, txn: Txn) -> dict[str, str]:
        p = txn.pay_params
        return {
            "vnp_Amount": p["vnp_Amount"],
            "vnp_BankCode": "NCB",
            "vnp_BankTranNo": f"VNP{txn.transaction_no}",
            "vnp_CardType": "ATM",
            "vnp_OrderInfo": p.get("vnp_OrderInfo", ""),
            "vnp_PayDate": txn.pay_date,
            "vnp_ResponseCode": txn.response_code,
            "vnp_TmnCode": p["vnp_TmnCode"],
            "vnp_TransactionNo": txn.transaction_no,
            "vnp_TransactionStatus": txn.transaction_status,
            "vnp_TxnRef": txn.txn_ref,
        }

    def return_redirect(self, txn: Txn) -> str:
        return_url = txn.pay_params["vnp_ReturnUrl"]
        sep = "&" if "?" in return_url else "?"
        return f"{return_url}{sep}{vnpay.signed_query(self.secret, self.result_params(txn))}"

    # --- IPN --------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def deliver_ipn(self, txn: Txn, fault: Fault) -> None:
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.ipn == "drop":
            txn.ipn_calls.append({"call": 0, "dropped": True})
            log.info("paysim_ipn_dropped", txn_ref=txn.txn_ref)
            return
        if fault.ipn == "concurrent":
            await asyncio.gather(*(self.ipn_with_retries(txn) for _ in range(fault.copies)))
            return
        for _ in range(fault.copies if fault.ipn == "duplicate" else 1):
            await self.ipn_with_retries(txn)

    async def ipn_with_retries(self, txn: Txn) -> None:
        """VNPAY's rule: RspCode 00 or 02 ends the flow; anything else, or a timeout, retries (at most 10 calls)."""
        url = self.settings.paysim_ipn_endpoint
        query = vnpay.signed_query(self.secret, self.result_params(txn))
        for call in range(1, self.settings.paysim_ipn_max_calls + 1):
            code: str | None = None
            try:
                async with httpx.AsyncClient(timeout=30) as client:
                    r = await client.get(f"{url}?{query}")
                code = str(r.json().get("RspCode"))
            except Exception as exc:  # timeouts and garbage count as "no answer"
                log.warning("paysim_ipn_failed", txn_ref=txn.txn_ref, call=call, error=repr(exc))
            txn.ipn_calls.append({"call": call, "rsp_code": code, "at": datetime.now(UTC).isoformat()})
            if code in ("00", "02"):
                return
            await asyncio.sleep(self.settings.paysim_ipn_retry_seconds)

    async def resend_ipn(self, txn_ref: str) -> bool:
        txn = self.txns.get(txn_ref)
        if txn is None:
            return False
        self._spawn(self.ipn_with_retries(txn))
        return True

    # --- merchant API -----------------------------------------------------------------------------

    def _answer(
        self,
        body: dict[str, str],
        code: str,
        message: str,
        txn: Txn | None,
        fields: tuple[str, ...],
        transaction_type: str = "01",
    ) -> dict[str, str]:
        out = {
            "vnp_ResponseId": uuid.uuid4().hex,
            "vnp_Command": body.get("vnp_Command", ""),
            "vnp_ResponseCode": code,
            "vnp_Message": message,
            "vnp_TmnCode": self.settings.vnpay_tmn_code,
            "vnp_TxnRef": body.get("vnp_TxnRef", ""),
        }
        if txn is not None:
            out.update(
                {
                    "vnp_Amount": body.get("vnp_Amount") or txn.pay_params["vnp_Amount"],
                    "vnp_BankCode": "NCB",
                    "vnp_PayDate": txn.pay_date,
                    "vnp_TransactionNo": txn.transaction_no,
                    "vnp_TransactionType": transaction_type,
                    "vnp_TransactionStatus": txn.transaction_status,
                    "vnp_OrderInfo": txn.pay_params.get("vnp_OrderInfo", ""),
                }
            )
        out["vnp_SecureHash"] = vnpay.pipe_hash(self.secret, out, fields)
        return out

    async def merchant_api(self, body: dict[str, str]) -> dict[str, str]:
        command = body.get("vnp_Command")
        fields = vnpay.QUERYDR_REQUEST if command == "querydr" else vnpay.REFUND_REQUEST
        response_fields = vnpay.QUERYDR_RESPONSE if command == "querydr" else vnpay.REFUND_RESPONSE
        if command not in ("querydr", "refund"):
            return self._answer(body, "03", "Invalid command", None, vnpay.QUERYDR_RESPONSE)
        expected = vnpay.pipe_hash(self.secret, body, fields)
        if not hmac.compare_digest(expected, str(body.get("vnp_SecureHash", "")).lower()):
            return self._answer(body, "97", "Invalid checksum", None, response_fields)
        if body.get("vnp_TmnCode") != self.settings.vnpay_tmn_code:
            return self._answer(body, "02", "Invalid TmnCode", None, response_fields)
        txn_ref = body.get("vnp_TxnRef", "")
        txn = self.txns.get(txn_ref)
        fault = self.fault_for(txn_ref)
        if command == "querydr":
            if txn is None or fault.hide_from_query:
                return self._answer(body, "91", "Transaction not found", None, response_fields)
            return self._answer(body, "00", "Success", txn, response_fields, "02" if txn.refunded else "01")
        if fault.refund_delay_seconds:
            await asyncio.sleep(fault.refund_delay_seconds)
        if txn is None:
            return self._answer(body, "91", "Transaction not found", None, response_fields)
        if fault.refund_refused:
            return self._answer(body, "95", "Refund refused", txn, response_fields, "02")
        # 07 (suspected fraud) took the money as 00 did: both can be refunded.
        if txn.transaction_status not in ("00", "07"):
            return self._answer(body, "95", "Payment not successful, refund refused", txn, response_fields, "02")
        if txn.refunded:
            return self._answer(body, "94", "Refund already requested", txn, response_fields, "02")
        if body.get("vnp_Amount") != txn.pay_params["vnp_Amount"]:
            return self._answer(body, "03", "Invalid amount", txn, response_fields, "02")
        txn.refunded = True
        log.info("paysim_refunded", txn_ref=txn_ref)
        if fault.refund_answer_lost:
            self.faults[txn_ref] = fault.model_copy(update={"refund_answer_lost": False})
            raise AnswerLost()
        return self._answer(body, "00", "Refund success", txn, response_fields, "02")


def create_app(settings: Settings) -> FastAPI:
    if not settings.paysim_active:
        raise RuntimeError("the payment simulator is disabled here (and can never run in production)")
    sim = Simulator(settings)
    app = FastAPI(title="VNPAY 2.1.0 simulator (offline, development and test only)")
    app.state.sim = sim

    @app.get(PAY_PATH, response_class=HTMLResponse)
    async def payment_page(request: Request) -> Response:
        query = request.url.query
        params = dict(parse_qsl(query, keep_blank_values=True))
        refusal = sim.check_request(params)
        if refusal:
            return HTMLResponse(_page("Giao dich khong hop le", refusal), status_code=400)
        amount = int(params["vnp_Amount"]) // 100
        form = (
            f"<form method='post' action='{CONFIRM_PATH}'><input type='hidden' name='q' value='{html.escape(query)}'>"
            "<button name='action' value='approve'>Thanh toan / Pay</button> "
            "<button name='action' value='decline'>Huy / Cancel</button></form>"
        )
        return HTMLResponse(_page(f"{amount:,} VND", html.escape(params.get("vnp_OrderInfo", "")), form))

    @app.post(CONFIRM_PATH)
    async def confirm(request: Request) -> Response:
        # The form is parsed by hand: a urlencoded body needs no multipart library.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        params = dict(parse_qsl(form.get("q", ""), keep_blank_values=True))
        refusal = sim.check_request(params)
        if refusal:
            return HTMLResponse(_page("Giao dich khong hop le", refusal), status_code=400)
        txn = sim.complete(params, form.get("action", "approve") == "approve", form.get("response_code") or None)
        return RedirectResponse(sim.return_redirect(txn), status_code=303)

    @app.post(API_PATH)
    async def merchant_api(request: Request) -> JSONResponse:
        body = {k: "" if v is None else str(v) for k, v in (await request.json()).items()}
        try:
            return JSONResponse(await sim.merchant_api(body))
        except AnswerLost:
            return JSONResponse({"detail": "gateway timeout"}, status_code=504)

    # --- test-only controls (the simulator itself never runs in production) -------------------------

    @app.post("/_control/faults")
    async def set_fault(fault: Fault) -> dict[str, str]:
        sim.faults[fault.txn_ref] = fault
        return {"ok": "set"}

    @app.delete("/_control/faults")
    async def clear_faults() -> dict[str, str]:
        sim.faults.clear()
        return {"ok": "cleared"}

    @app.post("/_control/transactions/{txn_ref}/resend-ipn")
    async def resend(txn_ref: str) -> JSONResponse:
        ok = await sim.resend_ipn(txn_ref)
        return JSONResponse({"ok": ok}, status_code=200 if ok else 404)

    @app.get("/_control/transactions/{txn_ref}")
    async def transaction(txn_ref: str) -> JSONResponse:
        txn = sim.txns.get(txn_ref)
        if txn is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return JSONResponse(
            {
                "txn_ref": txn.txn_ref,
                "response_code": txn.response_code,
                "transaction_status": txn.transaction_status,
                "refunded": txn.refunded,
                "ipn_calls": txn.ipn_calls,
                "return_url": sim.return_redirect(txn),
            }
        )

    @app.get("/healthz")
    @app.get("/readyz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _page(title: str, detail: str, extra: str = "") -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>VNPAY (simulator)</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{detail}</p>{extra}</body></html>"
    )
