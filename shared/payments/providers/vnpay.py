"""VNPAY 2.1.0: payment URL, IPN/return verification, querydr and refund (facts: shared/reference/vnpay.md).

Signature (A3): the ``vnp_`` parameters except the hash, empty values dropped, sorted by name, each name and
value form-encoded like PHP ``urlencode`` (space -> ``+``, upper-case ``%XX``, ``~`` -> ``%7E``), joined with
``&``; HMAC-SHA512 with the hash secret, lower-case hex. The payment URL's query string *is* the signed string.
querydr/refund sign their raw values joined by ``|`` instead (A7).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx

from shared.payments.providers.base import (
    NotANotification,
    Notification,
    Outcome,
    PaymentAttempt,
    QueryResult,
    QueryStatus,
    RefundRequest,
    RefundResult,
    RefundStatus,
)

VERSION = "2.1.0"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # never "Etc/GMT+7", which is UTC-7 (A9)
DATE_FORMAT = "%Y%m%d%H%M%S"
HASH_FIELDS = frozenset({"vnp_SecureHash", "vnp_SecureHashType"})

# IPN answers (A5): VNPAY stops retrying on 00 and 02 only.
RSP_MESSAGES = {
    "00": "Confirm Success",
    "01": "Order not found",
    "02": "Order already confirmed",
    "04": "Invalid amount",
    "97": "Invalid signature",
    "99": "Unknown error",
}

QUERYDR_REQUEST = (
    "vnp_RequestId",
    "vnp_Version",
    "vnp_Command",
    "vnp_TmnCode",
    "vnp_TxnRef",
    "vnp_TransactionDate",
    "vnp_CreateDate",
    "vnp_IpAddr",
    "vnp_OrderInfo",
)
REFUND_REQUEST = (
    "vnp_RequestId",
    "vnp_Version",
    "vnp_Command",
    "vnp_TmnCode",
    "vnp_TransactionType",
    "vnp_TxnRef",
    "vnp_Amount",
    "vnp_TransactionNo",
    "vnp_TransactionDate",
    "vnp_CreateBy",
    "vnp_CreateDate",
    "vnp_IpAddr",
    "vnp_OrderInfo",
)
REFUND_RESPONSE = (
    "vnp_ResponseId",
    "vnp_Command",
    "vnp_ResponseCode",
    "vnp_Message",
    "vnp_TmnCode",
    "vnp_TxnRef",
    "vnp_Amount",
    "vnp_BankCode",
    "vnp_PayDate",
    "vnp_TransactionNo",
    "vnp_TransactionType",
    "vnp_TransactionStatus",
    "vnp_OrderInfo",
)
# querydr answers with the refund answer's fields and the promotion applied, in that order (A7).
QUERYDR_RESPONSE = (*REFUND_RESPONSE, "vnp_PromotionCode", "vnp_PromotionAmount")

# A provider result (IPN and return URL, A5/A6) carries these, each non-empty. Our own payment URL is signed with
# the same secret and canonical form but carries none of them, and carries request-only fields instead: both
# checks together keep a buyer's payment URL, replayed as an IPN, from ever being taken for VNPAY's answer.
RESULT_FIELDS = ("vnp_ResponseCode", "vnp_TransactionStatus", "vnp_TransactionNo", "vnp_PayDate", "vnp_BankCode")
REQUEST_ONLY_FIELDS = frozenset(
    {
        "vnp_Version",
        "vnp_Command",
        "vnp_CreateDate",
        "vnp_CurrCode",
        "vnp_IpAddr",
        "vnp_Locale",
        "vnp_OrderType",
        "vnp_ReturnUrl",
        "vnp_ExpireDate",
        "vnp_RequestId",
        "vnp_CreateBy",
        "vnp_TransactionDate",
    }
)
# The formats of VNPAY's fields (A2, A5): anything looser is not VNPAY's.
_FORMATS = {
    "vnp_Amount": re.compile(r"[1-9][0-9]{2,17}"),  # VND x 100
    "vnp_ResponseCode": re.compile(r"[0-9]{2}"),
    "vnp_TransactionStatus": re.compile(r"[0-9]{2}"),
    "vnp_TransactionNo": re.compile(r"[0-9]{1,15}"),
    "vnp_PayDate": re.compile(r"[0-9]{14}"),
    "vnp_BankCode": re.compile(r"[A-Za-z0-9]{2,20}"),
}

_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:_#/-]")
_SPACES = re.compile(r"\s+")
_TXN_REF = re.compile(r"([0-9a-f]{32})([0-9]{2})")


# --- signing ----------------------------------------------------------------------------------------


def enc(value: str) -> str:
    """PHP urlencode(): form encoding of the UTF-8 bytes, ``~`` encoded too."""
    return quote_plus(value, safe="").replace("~", "%7E")


def sign_data(params: Mapping[str, Any]) -> str:
    items = sorted(
        (k, str(v))
        for k, v in params.items()
        if k.startswith("vnp_") and k not in HASH_FIELDS and v is not None and str(v) != ""
    )
    return "&".join(f"{enc(k)}={enc(v)}" for k, v in items)


def hmac_sha512(secret: str, data: str) -> str:
    return hmac.new(secret.encode(), data.encode(), hashlib.sha512).hexdigest()


def secure_hash(secret: str, params: Mapping[str, Any]) -> str:
    return hmac_sha512(secret, sign_data(params))


def signed_query(secret: str, params: Mapping[str, Any]) -> str:
    data = sign_data(params)
    return f"{data}&vnp_SecureHash={hmac_sha512(secret, data)}"


def verify_params(secret: str, params: Mapping[str, str]) -> bool:
    received = params.get("vnp_SecureHash")
    if not received or not isinstance(received, str):
        return False
    return hmac.compare_digest(secure_hash(secret, params), received.lower())


def pipe_hash(secret: str, values: Mapping[str, Any], fields: Iterable[str]) -> str:
    """querydr/refund checksum: raw values (missing ones empty) joined by ``|``."""
    return hmac_sha512(secret, "|".join("" if values.get(f) is None else str(values[f]) for f in fields))


# --- values -----------------------------------------------------------------------------------------


def fold(text: str, limit: int = 255) -> str:
    """Vietnamese without diacritics and without special characters (the doc's rule for vnp_OrderInfo)."""
    text = text.replace("đ", "d").replace("Đ", "D")
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _SPACES.sub(" ", _UNSAFE.sub(" ", text)).strip()
    return text[:limit] or "Thanh toan"


def vn_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: VNPAY dates need a timezone")
    return moment.astimezone(TZ).strftime(DATE_FORMAT)


def parse_vn_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=TZ)
    except (TypeError, ValueError):
        return None


def outcome_of(response_code: str, transaction_status: str) -> Outcome:
    """Success only when both codes are 00 (the .NET sample's AND, A5); 07 is suspected fraud: review."""
    if response_code == "00" and transaction_status == "00":
        return Outcome.SUCCEEDED
    if "07" in (response_code, transaction_status):
        return Outcome.REVIEW
    return Outcome.FAILED


def rsp(code: str) -> dict[str, str]:
    return {"RspCode": code, "Message": RSP_MESSAGES[code]}


# --- the provider -----------------------------------------------------------------------------------


class VnpayProvider:
    name = "vnpay"

    def __init__(
        self,
        tmn_code: str,
        hash_secret: str,
        pay_url: str,
        api_url: str,
        return_url: str,
        *,
        locale: str = "vn",
        order_type: str = "other",
        server_ip: str = "127.0.0.1",
        timeout: float = 10.0,
    ) -> None:
        self.tmn_code = tmn_code
        self._secret = hash_secret  # never logged, never in repr
        self.pay_url = pay_url
        self.api_url = api_url
        self.return_url = return_url
        self.locale = locale
        self.order_type = order_type
        self.server_ip = server_ip
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"VnpayProvider(tmn_code={self.tmn_code!r}, pay_url={self.pay_url!r})"

    # The reference is the order id's 32 hex digits and a two-digit attempt number: alphanumeric, unique per
    # attempt (so never repeated within a day), and the order is read straight back from it.
    def txn_ref(self, order_id: UUID, attempt: int) -> str:
        if not 1 <= attempt <= 99:
            raise ValueError("attempt must be 1..99")
        return f"{order_id.hex}{attempt:02d}"

    def parse_txn_ref(self, txn_ref: str) -> tuple[UUID, int] | None:
        m = _TXN_REF.fullmatch(txn_ref or "")
        if m is None or int(m.group(2)) == 0:
            return None
        return UUID(m.group(1)), int(m.group(2))

    def pay_params(self, attempt: PaymentAttempt) -> dict[str, str]:
        return {
            "vnp_Version": VERSION,
            "vnp_Command": "pay",
            "vnp_TmnCode": self.tmn_code,
            "vnp_Amount": str(attempt.amount * 100),
            "vnp_CreateDate": vn_time(attempt.created_at),
            "vnp_CurrCode": "VND",
            "vnp_IpAddr": attempt.client_ip or "127.0.0.1",
            "vnp_Locale": self.locale,
            "vnp_OrderInfo": fold(attempt.description),
            "vnp_OrderType": self.order_type,
            "vnp_ReturnUrl": self.return_url,
            "vnp_ExpireDate": vn_time(attempt.expires_at),
            "vnp_TxnRef": self.txn_ref(attempt.order_id, attempt.attempt),
        }

    def payment_url(self, attempt: PaymentAttempt) -> str:
        return f"{self.pay_url}?{signed_query(self._secret, self.pay_params(attempt))}"

    def verify(self, params: Mapping[str, str]) -> bool:
        return verify_params(self._secret, params)

    def notification(self, params: Mapping[str, str]) -> Notification:
        """A provider result from the IPN or the return URL; NotANotification for anything else we signed."""
        present = REQUEST_ONLY_FIELDS.intersection(k for k, v in params.items() if v)
        if present:
            raise NotANotification(f"carries request-only fields: {', '.join(sorted(present))}")
        return self._result(params)

    def _result(self, params: Mapping[str, str]) -> Notification:
        missing = [f for f in RESULT_FIELDS if not params.get(f)]
        if missing:
            raise NotANotification(f"lacks the result fields {', '.join(missing)}")
        for name, pattern in _FORMATS.items():
            if not pattern.fullmatch(params.get(name, "")):
                raise NotANotification(f"{name} is not in VNPAY's format")
        txn_ref = params.get("vnp_TxnRef", "")
        parsed = self.parse_txn_ref(txn_ref)
        if parsed is None:
            raise ValueError(f"not one of our references: {txn_ref[:40]!r}")
        if params.get("vnp_TmnCode") != self.tmn_code:
            raise ValueError("not for our terminal")
        raw_amount = params["vnp_Amount"]
        if int(raw_amount) % 100:
            raise ValueError("vnp_Amount is not a whole number of VND x 100")
        response_code = params.get("vnp_ResponseCode", "")
        status = params.get("vnp_TransactionStatus", "")
        return Notification(
            provider=self.name,
            txn_ref=txn_ref,
            order_id=parsed[0],
            attempt=parsed[1],
            amount=int(raw_amount) // 100,  # divided only after the signature passed (A9)
            outcome=outcome_of(response_code, status),
            response_code=response_code,
            transaction_status=status,
            provider_txn_no=params.get("vnp_TransactionNo", ""),
            paid_at=parse_vn_time(params.get("vnp_PayDate", "")),
            params=dict(params),
        )

    # --- merchant API (querydr, refund) ---------------------------------------------------------------

    async def _post(self, body: dict[str, str], response_fields: tuple[str, ...]) -> dict[str, str]:
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            r = await client.post(self.api_url, json=body)
        r.raise_for_status()
        raw = r.json()
        if not isinstance(raw, dict):
            raise ValueError("the provider's response is not a JSON object")
        data = {str(k): "" if v is None else str(v) for k, v in raw.items()}
        expected = pipe_hash(self._secret, data, response_fields)
        if not hmac.compare_digest(expected, data.get("vnp_SecureHash", "").lower()):
            raise ValueError("the provider's response has a bad checksum")
        # An answer names the command it answers and has its own id; it never echoes our request-only fields.
        if data.get("vnp_Command") != body["vnp_Command"] or not data.get("vnp_ResponseId"):
            raise ValueError("not an answer to this request")
        if any(data.get(f) for f in ("vnp_RequestId", "vnp_CreateDate", "vnp_IpAddr", "vnp_CreateBy")):
            raise ValueError("the answer carries request-only fields")
        if data.get("vnp_ResponseCode") == "00" and data.get("vnp_TxnRef") != body["vnp_TxnRef"]:
            raise ValueError("the answer is for another reference")
        return data

    def _request_base(self, command: str, now: datetime) -> dict[str, str]:
        return {
            "vnp_RequestId": uuid.uuid4().hex,
            "vnp_Version": VERSION,
            "vnp_Command": command,
            "vnp_TmnCode": self.tmn_code,
            "vnp_CreateDate": vn_time(now),
            "vnp_IpAddr": self.server_ip,
        }

    async def query(self, txn_ref: str, transaction_date: datetime) -> QueryResult:
        from datetime import UTC

        body = {
            **self._request_base("querydr", datetime.now(UTC)),
            "vnp_TxnRef": txn_ref,
            "vnp_TransactionDate": vn_time(transaction_date),
            "vnp_OrderInfo": fold(f"Truy van GD ma:{txn_ref}"),
        }
        body["vnp_SecureHash"] = pipe_hash(self._secret, body, QUERYDR_REQUEST)
        try:
            data = await self._post(body, QUERYDR_RESPONSE)
        except (httpx.HTTPError, ValueError) as exc:
            return QueryResult(QueryStatus.ERROR, detail=f"{type(exc).__name__}: {exc}"[:300])
        code = data.get("vnp_ResponseCode", "")
        if code == "91":
            return QueryResult(QueryStatus.NOT_FOUND, detail="transaction not found")
        if code != "00":
            return QueryResult(QueryStatus.ERROR, detail=f"querydr answered {code}")
        status = data.get("vnp_TransactionStatus", "")
        if data.get("vnp_TransactionType") in ("02", "03"):  # a full or partial refund was made
            return QueryResult(QueryStatus.FOUND, detail="refunded", refunded=True)
        if status in ("01", ""):  # not completed yet: the buyer may still be on the payment page
            return QueryResult(QueryStatus.NOT_FOUND, detail="transaction not completed")
        # A successful querydr is the same evidence as an IPN: the payment's own codes decide the outcome.
        params = {k: v for k, v in data.items() if k.startswith("vnp_") and v != "" and k not in ("vnp_Command",)}
        params["vnp_ResponseCode"] = "00" if status == "00" else status
        try:
            return QueryResult(QueryStatus.FOUND, notification=self._result(params))
        except ValueError as exc:
            return QueryResult(QueryStatus.ERROR, detail=f"querydr answer unusable: {exc}"[:300])

    async def refund(self, request: RefundRequest) -> RefundResult:
        from datetime import UTC

        body = {
            **self._request_base("refund", datetime.now(UTC)),
            "vnp_TransactionType": "02",  # full refund
            "vnp_TxnRef": request.txn_ref,
            "vnp_Amount": str(request.amount * 100),
            "vnp_TransactionNo": request.provider_txn_no or "0",
            "vnp_TransactionDate": vn_time(request.transaction_date),
            "vnp_CreateBy": "ticketing",
            "vnp_OrderInfo": fold(f"Hoan tien GD ma:{request.txn_ref} {request.reason}"),
        }
        body["vnp_SecureHash"] = pipe_hash(self._secret, body, REFUND_REQUEST)
        try:
            data = await self._post(body, REFUND_RESPONSE)
        except (httpx.HTTPError, ValueError) as exc:
            return RefundResult(RefundStatus.ERROR, f"{type(exc).__name__}: {exc}"[:300])
        code = data.get("vnp_ResponseCode", "")
        status = {
            "00": RefundStatus.CONFIRMED,
            "94": RefundStatus.IN_PROGRESS,
            "95": RefundStatus.REFUSED,
            "91": RefundStatus.REFUSED,
        }.get(code, RefundStatus.ERROR)
        return RefundResult(status, f"refund answered {code}: {data.get('vnp_Message', '')}"[:300], data)
