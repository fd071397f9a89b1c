"""VNPAY 2.1.0 signing and verification against the public test vectors of shared/reference/vnpay.md (A4, A7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest

from shared.payments.providers.base import NotANotification, Outcome, PaymentAttempt
from shared.payments.providers.vnpay import (
    QUERYDR_REQUEST,
    REFUND_REQUEST,
    REQUEST_ONLY_FIELDS,
    VnpayProvider,
    enc,
    fold,
    hmac_sha512,
    outcome_of,
    pipe_hash,
    secure_hash,
    sign_data,
    verify_params,
    vn_time,
)

RETURN_QUERY = (
    "vnp_Amount=1000000&vnp_BankCode=NCB&vnp_BankTranNo=VNP14422574&vnp_CardType=ATM&vnp_OrderInfo=Thanh+toan+don+hang+"
    "2024-05-21T02%3A17%3A31.249Z&vnp_PayDate=20240521091806&vnp_ResponseCode=00&vnp_TmnCode=TEST_TMN_CODE"
    "&vnp_TransactionNo=14422574&vnp_TransactionStatus=00&vnp_TxnRef=1716257871703"
)
RETURN_HASH = (
    "649982421beb422556a1374713c74e58e716ecbd05007c0c0e1f7effdfaf361dbf146889ca446139afe11b9954c4d5c486e99e3b86fcfab6957f"
    "29eb0be72895"
)


def test_public_vector_return_query_verifies() -> None:
    params = dict(parse_qsl(RETURN_QUERY, keep_blank_values=True))
    assert sign_data(params) == RETURN_QUERY  # decoding and re-encoding gives back the signed bytes
    assert secure_hash("test_secret", params) == RETURN_HASH
    assert verify_params("test_secret", {**params, "vnp_SecureHash": RETURN_HASH})
    assert verify_params("test_secret", {**params, "vnp_SecureHash": RETURN_HASH.upper()})  # .NET compares any case


def test_public_vector_raw_hmac() -> None:
    data = "vnp_Amount=10000&vnp_OrderInfo=Payment+for+order+%231234567890&vnp_TnxRef=1234567890"
    assert hmac_sha512("YOUR_SECURE_SECRET", data) == (
        "7bb8160a5d2085a85b3267817a40ee4f770a335282f19714726e6fc6f28a64c75a1e7e9c1aa96f3cbda5ce44095088fb4cb2af66c596d2f6"
        "55b0b53966312089"
    )


def test_payment_url_example_matches_the_doc_byte_for_byte() -> None:
    params = {
        "vnp_Amount": "1806000",
        "vnp_Command": "pay",
        "vnp_CreateDate": "20210801153333",
        "vnp_CurrCode": "VND",
        "vnp_ExpireDate": "20210801154833",
        "vnp_IpAddr": "127.0.0.1",
        "vnp_Locale": "vn",
        "vnp_OrderInfo": "Thanh toan don hang :5",
        "vnp_OrderType": "other",
        "vnp_ReturnUrl": "https://domainmerchant.vn/ReturnUrl",
        "vnp_TmnCode": "DEMOV210",
        "vnp_TxnRef": "5",
        "vnp_Version": "2.1.0",
        "vnp_SecureHash": "ignored",
        "vnp_BankCode": "",
    }
    assert sign_data(params) == (
        "vnp_Amount=1806000&vnp_Command=pay&vnp_CreateDate=20210801153333&vnp_CurrCode=VND&vnp_ExpireDate=20210801154833"
        "&vnp_IpAddr=127.0.0.1&vnp_Locale=vn&vnp_OrderInfo=Thanh+toan+don+hang+%3A5&vnp_OrderType=other"
        "&vnp_ReturnUrl=https%3A%2F%2Fdomainmerchant.vn%2FReturnUrl&vnp_TmnCode=DEMOV210&vnp_TxnRef=5&vnp_Version=2.1.0"
    )
    assert secure_hash("test_secret", params) == (
        "0c8d1c2a4cd362ffbedf8b52ec3c3c7b546ec32af881bdeb45c0c9db5cf9f633699314eac121842b1b7c9813a44bf08c9d0faf3ec742f6"
        "419b4ff4ebcf00799b"
    )


def test_querydr_and_refund_checksums() -> None:
    q = dict(
        zip(
            QUERYDR_REQUEST,
            [
                "REQ20240521001",
                "2.1.0",
                "querydr",
                "DEMOV210",
                "5",
                "20210801153333",
                "20240521100000",
                "10.0.0.1",
                "Truy van GD ma:5",
            ],
            strict=True,
        )
    )
    assert pipe_hash("test_secret", q, QUERYDR_REQUEST) == (
        "d97889edda9a13aba8da4bed3e1da6d328d25df062f1a7a3deade77d8e2158d4431107e3256e23f627c100279f081f72fa02c9b8eea0fd"
        "03644f3ea19fe85400"
    )
    r = dict(
        zip(
            REFUND_REQUEST,
            [
                "REF20240521001",
                "2.1.0",
                "refund",
                "DEMOV210",
                "02",
                "5",
                "1806000",
                "14226112",
                "20210801153333",
                "admin",
                "20240521100000",
                "10.0.0.1",
                "Hoan tien GD ma:5",
            ],
            strict=True,
        )
    )
    assert pipe_hash("test_secret", r, REFUND_REQUEST) == (
        "ecdaa60c1229e3f8af0c8fef9cda5b4ffcc4b20ef514a7c0cfc44d69f8060202a24e1e5ca48180e70382a3ad9a09a2cd1f7096119864"
        "125d1c87885cca8eba4d"
    )


def test_tampering_breaks_the_signature() -> None:
    params = {**dict(parse_qsl(RETURN_QUERY)), "vnp_SecureHash": RETURN_HASH}
    assert not verify_params("test_secret", {**params, "vnp_Amount": "2000000"})
    assert not verify_params("other_secret", params)
    assert not verify_params("test_secret", {k: v for k, v in params.items() if k != "vnp_SecureHash"})
    assert not verify_params("test_secret", {**params, "vnp_SecureHash": ""})


def test_encoding_is_php_urlencode() -> None:
    assert enc("a b~c*d!e'(f)") == "a+b%7Ec%2Ad%21e%27%28f%29"
    assert enc("Đà") == "%C4%90%C3%A0"


def test_order_info_is_folded_to_safe_ascii() -> None:
    assert fold("Thanh toán vé Đêm nhạc Trịnh #12 (VIP) ~ 100%!") == "Thanh toan ve Dem nhac Trinh #12 VIP 100"
    assert fold("") == "Thanh toan"
    assert len(fold("x" * 400)) == 255


def test_dates_are_gmt7_whatever_the_host_zone() -> None:
    assert vn_time(datetime(2026, 11, 25, 17, 0, 0, tzinfo=UTC)) == "20261126000000"
    with pytest.raises(ValueError):
        vn_time(datetime(2026, 11, 25))


def test_success_needs_both_codes_and_07_is_review() -> None:
    assert outcome_of("00", "00") is Outcome.SUCCEEDED
    assert outcome_of("00", "01") is Outcome.FAILED
    assert outcome_of("24", "02") is Outcome.FAILED
    assert outcome_of("07", "00") is Outcome.REVIEW
    assert outcome_of("00", "07") is Outcome.REVIEW


def _provider() -> VnpayProvider:
    return VnpayProvider(
        "TICKETDV", "s3cret", "https://pay.example/vpcpay.html", "https://api.example", "https://shop.example/return"
    )


def test_txn_ref_is_unique_per_attempt_and_maps_back() -> None:
    p, order = _provider(), uuid.uuid4()
    refs = {p.txn_ref(order, n) for n in range(1, 10)}
    assert len(refs) == 9 and all(r.isalnum() and len(r) <= 100 for r in refs)
    assert p.parse_txn_ref(p.txn_ref(order, 3)) == (order, 3)
    assert p.parse_txn_ref("1716257871703") is None and p.parse_txn_ref(order.hex + "00") is None


def test_payment_url_is_signed_and_carries_every_required_field() -> None:
    p, order = _provider(), uuid.uuid4()
    created = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    expires = datetime(2026, 11, 25, 10, 15, tzinfo=UTC)
    url = p.payment_url(PaymentAttempt(order, 1, 150_000, created, expires, "Vé Hòa nhạc", "10.1.2.3"))
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://pay.example/vpcpay.html"
    assert parts.query.endswith("&vnp_SecureHash=" + secure_hash("s3cret", dict(parse_qsl(parts.query))))
    params = dict(parse_qsl(parts.query))
    assert p.verify(params)
    assert params["vnp_Amount"] == "15000000" and params["vnp_CurrCode"] == "VND"
    assert params["vnp_CreateDate"] == "20261125170000" and params["vnp_ExpireDate"] == "20261125171500"
    assert params["vnp_OrderInfo"] == "Ve Hoa nhac" and params["vnp_TxnRef"] == p.txn_ref(order, 1)
    assert params["vnp_Version"] == "2.1.0" and params["vnp_Command"] == "pay" and params["vnp_IpAddr"] == "10.1.2.3"
    assert "vnp_SecureHashType" not in params


def test_notification_divides_the_amount_only_after_verifying() -> None:
    p, order = _provider(), uuid.uuid4()
    params = {
        "vnp_Amount": "15000000",
        "vnp_TxnRef": p.txn_ref(order, 2),
        "vnp_TmnCode": "TICKETDV",
        "vnp_ResponseCode": "00",
        "vnp_TransactionStatus": "00",
        "vnp_TransactionNo": "42",
        "vnp_PayDate": "20261125171000",
        "vnp_BankCode": "NCB",
    }
    n = p.notification(params)
    assert (n.order_id, n.attempt, n.amount, n.outcome) == (order, 2, 150_000, Outcome.SUCCEEDED)
    with pytest.raises(ValueError):
        p.notification({**params, "vnp_Amount": "15000050"})
    with pytest.raises(ValueError, match="terminal"):
        p.notification({**params, "vnp_TmnCode": "OTHERTMN"})
    assert "s3cret" not in repr(p)


def _result_params(p: VnpayProvider, order: uuid.UUID) -> dict[str, str]:
    return {
        "vnp_Amount": "15000000",
        "vnp_TxnRef": p.txn_ref(order, 1),
        "vnp_TmnCode": "TICKETDV",
        "vnp_ResponseCode": "00",
        "vnp_TransactionStatus": "00",
        "vnp_TransactionNo": "42",
        "vnp_PayDate": "20261125171000",
        "vnp_BankCode": "NCB",
        "vnp_OrderInfo": "Ve",
    }


def test_our_own_payment_url_is_never_taken_for_a_provider_result() -> None:
    """The payment URL is signed like an IPN: replayed as one, its signature passes, but it is not a result."""
    p, order = _provider(), uuid.uuid4()
    created = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    url = p.payment_url(PaymentAttempt(order, 1, 150_000, created, created + timedelta(minutes=15), "Ve"))
    reflected = dict(parse_qsl(urlsplit(url).query))
    assert p.verify(reflected)  # the very danger: our signature on it is genuine
    with pytest.raises(NotANotification, match="request-only"):
        p.notification(reflected)
    # Even stripped of the request-only fields, it lacks what only the provider can say.
    stripped = {k: v for k, v in reflected.items() if k not in REQUEST_ONLY_FIELDS}
    with pytest.raises(NotANotification, match="vnp_ResponseCode"):
        p.notification(stripped)


@pytest.mark.parametrize(
    "field", ["vnp_ResponseCode", "vnp_TransactionStatus", "vnp_TransactionNo", "vnp_PayDate", "vnp_BankCode"]
)
def test_a_result_without_each_response_field_is_refused(field: str) -> None:
    p, order = _provider(), uuid.uuid4()
    params = _result_params(p, order)
    assert p.notification(params).outcome is Outcome.SUCCEEDED
    with pytest.raises(NotANotification, match=field):
        p.notification({**params, field: ""})
    with pytest.raises(NotANotification, match=field):
        p.notification({k: v for k, v in params.items() if k != field})


@pytest.mark.parametrize("field", sorted(REQUEST_ONLY_FIELDS))
def test_a_result_carrying_a_request_only_field_is_refused(field: str) -> None:
    p, order = _provider(), uuid.uuid4()
    with pytest.raises(NotANotification, match=field):
        p.notification({**_result_params(p, order), field: "x"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vnp_Amount", "1.5e9"),
        ("vnp_Amount", "-15000000"),
        ("vnp_Amount", "9" * 30),
        ("vnp_Amount", "\uff11\uff15" + "\uff10" * 6),  # full-width digits: str.isdigit() says yes
        ("vnp_ResponseCode", "0"),
        ("vnp_TransactionNo", "12a"),
        ("vnp_PayDate", "2026-11-25"),
        ("vnp_BankCode", "N C B"),
    ],
)
def test_fields_looser_than_vnpays_format_are_refused(field: str, value: str) -> None:
    p, order = _provider(), uuid.uuid4()
    with pytest.raises(ValueError):
        p.notification({**_result_params(p, order), field: value})


@pytest.mark.parametrize("ref", ["", "x" * 34, "ABCDEF" + "0" * 28, "0" * 32 + "01\n", " " + "a" * 32 + "01"])
def test_references_looser_than_ours_are_not_ours(ref: str) -> None:
    assert _provider().parse_txn_ref(ref) is None
