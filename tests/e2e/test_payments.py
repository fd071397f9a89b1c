"""Payments end to end: gateway -> VNPAY simulator -> IPN -> payment service -> inventory, real processes and HTTP.

The simulator speaks VNPAY 2.1.0; its test-only controls make an IPN late, duplicated, concurrent or lost.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from services.paysim.client import pay_with_simulator
from shared.payments.providers import from_settings
from shared.payments.providers.vnpay import TZ, signed_query, vn_time
from tests.harness import Stack, eventually


def body(tt: str, quantity: int = 1) -> dict[str, Any]:
    return {"items": [{"ticket_type_id": tt, "quantity": quantity}]}


async def checkout(stack: Stack, user: str, tt: str, quantity: int = 1) -> dict[str, Any]:
    async with stack.client(user) as c:
        r = await c.post("/checkout", json=body(tt, quantity))
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    assert order["status"] == "PENDING" and order["payment_url"]
    return order


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def txn_ref(order: dict[str, Any]) -> str:
    return query_of(order["payment_url"])["vnp_TxnRef"]


def sim_url(stack: Stack, path: str) -> str:
    return f"http://127.0.0.1:{stack.settings.paysim_port}{path}"


async def fault(stack: Stack, ref: str, **kw: Any) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(sim_url(stack, "/_control/faults"), json={"txn_ref": ref, **kw})
    assert r.status_code == 200, r.text


async def sim_txn(stack: Stack, ref: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as c:
        r = await c.get(sim_url(stack, f"/_control/transactions/{ref}"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def resend_ipn(stack: Stack, ref: str) -> None:
    async with httpx.AsyncClient() as c:
        r = await c.post(sim_url(stack, f"/_control/transactions/{ref}/resend-ipn"))
    assert r.status_code == 200, r.text


async def ipn_codes(stack: Stack, ref: str) -> list[str]:
    return [c["rsp_code"] for c in (await sim_txn(stack, ref))["ipn_calls"] if "rsp_code" in c]


async def wait_status(stack: Stack, order_id: str, status: str, within: float = 20.0) -> None:
    async def reached() -> bool:
        return await stack.order_status(order_id) == status

    await eventually(reached, timeout=within, what=f"order {order_id} {status}")


async def call_ipn(stack: Stack, query: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        r = await c.get(f"/payments/vnpay/ipn?{query}")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def ipn_params(stack: Stack, ref: str, amount_vnd: int, code: str = "00") -> dict[str, str]:
    return {
        "vnp_Amount": str(amount_vnd * 100),
        "vnp_BankCode": "NCB",
        "vnp_CardType": "ATM",
        "vnp_OrderInfo": "Thanh toan",
        "vnp_PayDate": vn_time(datetime.now(TZ)),
        "vnp_ResponseCode": code,
        "vnp_TmnCode": stack.settings.vnpay_tmn_code,
        "vnp_TransactionNo": str(random.randint(1, 10**8)),
        "vnp_TransactionStatus": code,
        "vnp_TxnRef": ref,
    }


def secret(stack: Stack) -> str:
    return stack.settings.vnpay_hash_secret.get_secret_value()


async def payment_rows(stack: Stack, order_id: str) -> int:
    return await stack.db.fetchval(  # type: ignore[no-any-return]
        "SELECT count(*) FROM payment.transactions WHERE order_id = $1", uuid.UUID(order_id)
    )


async def tickets(stack: Stack, order_id: str) -> list[str]:
    rows = await stack.db.fetch("SELECT code FROM inventory.tickets WHERE order_id = $1", uuid.UUID(order_id))
    return [r["code"] for r in rows]


# --- the payment URL ---------------------------------------------------------------------------------


async def late_payer_loses_the_seat(
    stack: Stack, late_buyer: str, winner: str, **faults: Any
) -> tuple[dict[str, Any], str, str]:
    """One ticket: the late buyer pays but the IPN is held back (with ``faults`` set on the simulator) until the
    hold expired and another buyer paid for the seat. Returns the late order, its TxnRef and the ticket type."""
    event = await stack.create_event(capacity=1, hold_seconds=3)
    tt = event["ticket_types"][0]["ticket_type_id"]
    late = await checkout(stack, late_buyer, tt, 1)
    ref = txn_ref(late)
    await fault(stack, ref, ipn="drop", hide_from_query=True, **faults)
    await pay_with_simulator(late["payment_url"])
    await wait_status(stack, late["order_id"], "EXPIRED")
    seat = await checkout(stack, winner, tt, 1)
    await pay_with_simulator(seat["payment_url"])
    await wait_status(stack, seat["order_id"], "PAID")
    return late, ref, tt


async def test_held_order_carries_a_signed_vnpay_url_matching_its_hold(stack: Stack) -> None:
    event = await stack.create_event(capacity=5, price=125_000, title="Đêm nhạc Trịnh")
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "url-reader", tt, 2)
    params = query_of(order["payment_url"])
    provider = from_settings(stack.settings)
    assert provider.verify(params)
    assert order["payment_url"].startswith(stack.settings.vnpay_pay_endpoint + "?")
    assert params["vnp_Amount"] == str(250_000 * 100)
    assert params["vnp_ExpireDate"] == vn_time(datetime.fromisoformat(order["expires_at"]))
    assert params["vnp_CreateDate"] == vn_time(datetime.fromisoformat(order["created_at"]))
    assert provider.parse_txn_ref(params["vnp_TxnRef"]) == (uuid.UUID(order["order_id"]), 1)
    assert params["vnp_OrderInfo"].isascii() and params["vnp_ReturnUrl"] == stack.settings.vnpay_return_endpoint
    async with stack.client("url-reader") as c:
        again = (await c.get(f"/orders/{order['order_id']}")).json()
    assert query_of(again["payment_url"])["vnp_TxnRef"] == params["vnp_TxnRef"]


# --- paid exactly once ----------------------------------------------------------------------------------


async def test_ipn_delivered_three_times_pays_once(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "pays-once", tt, 2)
    ref = txn_ref(order)
    assert await stack.stock(tt) == (10, 2, 0)
    await fault(stack, ref, ipn="duplicate", copies=3)
    await pay_with_simulator(order["payment_url"])
    await wait_status(stack, order["order_id"], "PAID")

    async def three_answers() -> list[str]:
        codes = await ipn_codes(stack, ref)
        return codes if len(codes) == 3 else []

    assert await eventually(three_answers, what="three IPN answers") == ["00", "02", "02"]
    assert await stack.stock(tt) == (10, 0, 2)
    assert await payment_rows(stack, order["order_id"]) == 1
    codes = await tickets(stack, order["order_id"])
    assert len(codes) == 2 and len(set(codes)) == 2 and all(len(c) >= 20 for c in codes)
    async with stack.client("pays-once") as c:
        shown = (await c.get(f"/orders/{order['order_id']}")).json()
    assert shown["status"] == "PAID" and shown["payment_url"] is None


async def test_concurrent_ipns_pay_once(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "concurrent-ipn", tt, 3)
    ref = txn_ref(order)
    await fault(stack, ref, ipn="concurrent", copies=3)
    await pay_with_simulator(order["payment_url"])
    await wait_status(stack, order["order_id"], "PAID")

    async def answers() -> list[str]:
        codes = await ipn_codes(stack, ref)
        return codes if len(codes) == 3 else []

    assert Counter(await eventually(answers, what="three IPN answers")) == {"00": 1, "02": 2}
    assert await stack.stock(tt) == (10, 0, 3)
    assert await payment_rows(stack, order["order_id"]) == 1
    assert len(await tickets(stack, order["order_id"])) == 3


# --- forged, wrong, unknown ----------------------------------------------------------------------------


async def test_forged_wrong_amount_and_unknown_order_change_nothing(stack: Stack) -> None:
    event = await stack.create_event(capacity=4, price=100_000)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "victim", tt, 1)
    ref = txn_ref(order)
    good = ipn_params(stack, ref, 100_000)

    tampered = signed_query(secret(stack), good).replace("vnp_Amount=10000000", "vnp_Amount=100")
    assert (await call_ipn(stack, tampered))["RspCode"] == "97"
    assert (await call_ipn(stack, signed_query("not-the-secret", good)))["RspCode"] == "97"
    assert (await call_ipn(stack, signed_query(secret(stack), good).split("&vnp_SecureHash")[0]))["RspCode"] == "97"
    twice = signed_query(secret(stack), good) + "&vnp_TxnRef=" + ref  # a repeated name is ambiguous: refused
    assert (await call_ipn(stack, twice))["RspCode"] == "97"
    wrong_amount = signed_query(secret(stack), ipn_params(stack, ref, 1_000))
    assert await call_ipn(stack, wrong_amount) == {"RspCode": "04", "Message": "Invalid amount"}
    unknown = signed_query(secret(stack), ipn_params(stack, uuid.uuid4().hex + "01", 100_000))
    assert (await call_ipn(stack, unknown))["RspCode"] == "01"
    foreign = signed_query(secret(stack), ipn_params(stack, "1716257871703", 100_000))
    assert (await call_ipn(stack, foreign))["RspCode"] == "01"

    assert await stack.order_status(order["order_id"]) == "PENDING"
    assert await stack.stock(tt) == (4, 1, 0)
    assert await payment_rows(stack, order["order_id"]) == 0
    # The real notification still goes through afterwards: nothing was poisoned by the forgeries.
    assert (await call_ipn(stack, signed_query(secret(stack), good)))["RspCode"] == "00"
    await wait_status(stack, order["order_id"], "PAID")
    assert await stack.stock(tt) == (4, 0, 1)


async def test_declined_payment_keeps_the_hold_and_a_new_attempt_pays(stack: Stack) -> None:
    event = await stack.create_event(capacity=4)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "second-try", tt, 1)
    first = txn_ref(order)
    await pay_with_simulator(order["payment_url"], approve=False)

    async def next_url() -> str | None:
        async with stack.client("second-try") as c:
            url = (await c.get(f"/orders/{order['order_id']}")).json()["payment_url"]
        return url if url and query_of(url)["vnp_TxnRef"] != first else None

    url = await eventually(next_url, what="a payment URL for attempt 2")
    assert await ipn_codes(stack, first) == ["00"]  # a recorded failure is answered 00
    assert await stack.order_status(order["order_id"]) == "PENDING" and await stack.stock(tt) == (4, 1, 0)
    assert from_settings(stack.settings).parse_txn_ref(query_of(url)["vnp_TxnRef"]) == (uuid.UUID(order["order_id"]), 2)
    await pay_with_simulator(url)
    await wait_status(stack, order["order_id"], "PAID")
    assert await stack.stock(tt) == (4, 0, 1)


async def test_suspected_fraud_is_held_for_review_not_paid(stack: Stack) -> None:
    event = await stack.create_event(capacity=4)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "suspicious", tt, 1)
    ref = txn_ref(order)
    await pay_with_simulator(order["payment_url"], response_code="07")

    async def reviewed() -> bool:
        return await stack.db.fetchval("SELECT status FROM payment.attempts WHERE txn_ref = $1", ref) == "REVIEW"

    await eventually(reviewed, what="the attempt held for review")
    assert await ipn_codes(stack, ref) == ["00"]
    assert await stack.order_status(order["order_id"]) == "PENDING"
    assert await stack.stock(tt) == (4, 1, 0)


# --- late payments ----------------------------------------------------------------------------------------


async def test_late_payment_with_stock_still_free_is_paid(stack: Stack) -> None:
    event = await stack.create_event(capacity=5, hold_seconds=3)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "late-but-lucky", tt, 2)
    ref = txn_ref(order)
    await fault(stack, ref, ipn="drop", hide_from_query=True)
    await pay_with_simulator(order["payment_url"])
    await wait_status(stack, order["order_id"], "EXPIRED")
    assert await stack.stock(tt) == (5, 0, 0)
    await resend_ipn(stack, ref)
    await wait_status(stack, order["order_id"], "PAID")
    assert await stack.stock(tt) == (5, 0, 2)
    assert (
        await stack.db.fetchval(
            "SELECT late FROM inventory.order_payments WHERE order_id = $1", uuid.UUID(order["order_id"])
        )
        is True
    )
    assert (
        await stack.db.fetchval("SELECT quantity FROM inventory.user_holdings WHERE user_id = $1", "late-but-lucky")
        == 2
    )
    assert len(await tickets(stack, order["order_id"])) == 2


async def test_late_payment_with_stock_gone_is_refunded(stack: Stack) -> None:
    late, ref, tt = await late_payer_loses_the_seat(stack, "too-late", "on-time", refund_delay_seconds=1.5)
    assert await stack.stock(tt) == (1, 0, 1)

    await resend_ipn(stack, ref)
    await wait_status(stack, late["order_id"], "REFUND_PENDING")  # the provider is still answering the refund
    await wait_status(stack, late["order_id"], "REFUNDED")
    assert (await sim_txn(stack, ref))["refunded"] is True
    assert await stack.stock(tt) == (1, 0, 1)
    assert await tickets(stack, late["order_id"]) == []
    assert (
        await stack.db.fetchval("SELECT status FROM payment.refunds WHERE order_id = $1", uuid.UUID(late["order_id"]))
        == "CONFIRMED"
    )


async def test_refund_whose_answer_was_lost_is_confirmed_once(stack: Stack) -> None:
    late, ref, tt = await late_payer_loses_the_seat(
        stack, "lost-refund-answer", "took-the-seat", refund_answer_lost=True
    )
    # querydr sees the payment again (as VNPAY's would): that is how the lost refund answer is found out.
    await fault(stack, ref, ipn="send", refund_answer_lost=True)
    await resend_ipn(stack, ref)
    await wait_status(stack, late["order_id"], "REFUNDED")
    row = await stack.db.fetchrow(
        "SELECT status, tries FROM payment.refunds WHERE order_id = $1", uuid.UUID(late["order_id"])
    )
    assert row is not None and row["status"] == "CONFIRMED" and row["tries"] >= 2
    assert (await sim_txn(stack, ref))["refunded"] is True
    assert await stack.stock(tt) == (1, 0, 1)


async def test_ipns_racing_expiry_have_one_winner_each(stack: Stack) -> None:
    n = 8
    event = await stack.create_event(capacity=n, hold_seconds=3)
    tt = event["ticket_types"][0]["ticket_type_id"]
    orders = await asyncio.gather(*(checkout(stack, f"racer-{i}", tt, 1) for i in range(n)))

    async def pay_around_expiry(i: int, order: dict[str, Any]) -> None:
        # Each IPN is sent between 1.5 s before and 0.25 s after its hold's expiry (hidden from querydr, so the
        # IPN and the expiry are the only two contenders).
        due = datetime.fromisoformat(order["expires_at"]).timestamp() - time.time()
        await fault(stack, txn_ref(order), hide_from_query=True, delay_seconds=max(0.0, due - 1.5 + i * 0.25))
        await pay_with_simulator(order["payment_url"])

    violations: list[tuple[int, int, int]] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            cap, held, sold = await stack.stock(tt)
            if held < 0 or sold + held > cap:
                violations.append((cap, held, sold))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(pay_around_expiry(i, o) for i, o in enumerate(orders)))
        for o in orders:
            await wait_status(stack, o["order_id"], "PAID", within=30)
    finally:
        done.set()
        await watcher
    assert violations == []
    assert await stack.stock(tt) == (n, 0, n)
    settled = await stack.db.fetch(
        "SELECT order_id, late FROM inventory.order_payments WHERE order_id = ANY($1::uuid[])",
        [uuid.UUID(o["order_id"]) for o in orders],
    )
    assert len(settled) == n  # one settlement per order: one winner each
    assert (
        await stack.db.fetchval("SELECT count(*) FROM inventory.tickets WHERE ticket_type_id = $1", uuid.UUID(tt)) == n
    )


# --- reconciliation and the return URL ------------------------------------------------------------------


async def test_lost_ipn_is_recovered_by_reconciliation(stack: Stack) -> None:
    event = await stack.create_event(capacity=3, hold_seconds=6)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "lost-ipn", tt, 1)
    ref = txn_ref(order)
    await fault(stack, ref, ipn="drop")
    await pay_with_simulator(order["payment_url"])
    await wait_status(stack, order["order_id"], "PAID")
    assert (await sim_txn(stack, ref))["ipn_calls"] == [{"call": 0, "dropped": True}]
    assert await stack.db.fetchval("SELECT source FROM payment.transactions WHERE txn_ref = $1", ref) == "querydr"
    assert await stack.stock(tt) == (3, 0, 1)


async def test_return_url_shows_the_order_and_never_changes_it(stack: Stack) -> None:
    event = await stack.create_event(capacity=3)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "returns", tt, 1)
    ref = txn_ref(order)
    await fault(stack, ref, ipn="drop", hide_from_query=True)
    location = await pay_with_simulator(order["payment_url"])
    assert location.startswith(stack.settings.vnpay_return_endpoint + "?")
    async with httpx.AsyncClient(headers={"Accept": "application/json"}) as c:
        shown = [(await c.get(location)).json() for _ in range(3)]
        tampered = await c.get(location.replace("vnp_ResponseCode=00", "vnp_ResponseCode=24"))
        page = await c.get(location, headers={"Accept": "text/html"})
    assert all(s["valid"] and s["status"] == "PENDING" and s["provider_result"] == "SUCCEEDED" for s in shown)
    assert tampered.status_code == 400
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert await stack.order_status(order["order_id"]) == "PENDING"
    assert await stack.stock(tt) == (3, 1, 0)
    assert await payment_rows(stack, order["order_id"]) == 0
    await resend_ipn(stack, ref)
    await wait_status(stack, order["order_id"], "PAID")
    async with httpx.AsyncClient(headers={"Accept": "application/json"}) as c:
        assert (await c.get(location)).json()["status"] == "PAID"


async def test_ipn_answered_00_while_the_payment_service_is_down_is_applied_when_it_returns(stack: Stack) -> None:
    event = await stack.create_event(capacity=3)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "service-down", tt, 1)
    ref = txn_ref(order)

    async def attempt_registered() -> bool:
        return await stack.db.fetchval("SELECT count(*) FROM payment.attempts WHERE txn_ref = $1", ref) == 1

    await eventually(attempt_registered, what="attempt 1 registered")
    await asyncio.to_thread(stack.supervisor.stop_service, "payment")
    try:
        query = signed_query(secret(stack), ipn_params(stack, ref, order["total"]))
        # Durable in the payment service's quorum queue (publisher confirm), so VNPAY may stop retrying.
        assert (await call_ipn(stack, query))["RspCode"] == "00"
        assert await stack.order_status(order["order_id"]) == "PENDING"
    finally:
        stack.supervisor.start_service("payment")
    await stack.wait_ready()
    await wait_status(stack, order["order_id"], "PAID")
    assert await stack.stock(tt) == (3, 0, 1)
    assert (await call_ipn(stack, query))["RspCode"] == "02"
