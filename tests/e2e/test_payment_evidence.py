"""What counts as the provider's word (issue 8, finding 1), end to end through the running services.

Our payment URL is signed with the same secret and canonical form as VNPAY's results. Replayed as an IPN it
must change nothing, and no earlier record of failure may ever stand in the way of VNPAY's genuine success.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.paysim.client import pay_with_simulator
from shared.payments.providers.vnpay import signed_query
from tests.e2e.test_payments import (
    call_ipn,
    checkout,
    fault,
    ipn_codes,
    ipn_params,
    payment_rows,
    secret,
    tickets,
    txn_ref,
    wait_status,
)
from tests.harness import Stack, eventually


async def attempt_status(stack: Stack, ref: str) -> str | None:
    return await stack.db.fetchval("SELECT status FROM payment.attempts WHERE txn_ref = $1", ref)  # type: ignore[no-any-return]


async def recorded(stack: Stack, ref: str) -> dict[str, Any] | None:
    row = await stack.db.fetchrow(
        "SELECT outcome, source, superseded IS NOT NULL AS replaced FROM payment.transactions WHERE txn_ref = $1", ref
    )
    return dict(row) if row else None


async def record_a_failure(stack: Stack, ref: str, amount: int) -> str:
    """A correctly signed 'cancelled by the buyer' result (24) for the reference: what gets recorded as FAILED."""
    return (await call_ipn(stack, signed_query(secret(stack), ipn_params(stack, ref, amount, "24"))))["RspCode"]


async def test_a_payment_url_replayed_as_an_ipn_changes_nothing_and_the_genuine_ipn_pays_once(stack: Stack) -> None:
    event = await stack.create_event(capacity=3, price=150_000)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "reflected", tt, 1)
    ref = txn_ref(order)
    reflected = urlsplit(order["payment_url"]).query

    assert await call_ipn(stack, reflected) == {"RspCode": "97", "Message": "Invalid signature"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Accept": "application/json"}) as c:
        shown = await c.get(f"/payments/vnpay/return?{reflected}")
    assert shown.status_code == 400 and shown.json()["valid"] is False
    assert await payment_rows(stack, order["order_id"]) == 0
    assert await attempt_status(stack, ref) == "STARTED"

    # The buyer pays; VNPAY's genuine IPN is answered 00 (not 02) and the order is paid, once.
    await pay_with_simulator(order["payment_url"])
    await wait_status(stack, order["order_id"], "PAID")
    assert await ipn_codes(stack, ref) == ["00"]
    assert await payment_rows(stack, order["order_id"]) == 1
    assert await recorded(stack, ref) == {"outcome": "SUCCEEDED", "source": "ipn", "replaced": False}
    assert len(await tickets(stack, order["order_id"])) == 1
    assert await stack.stock(tt) == (3, 0, 1)


async def test_a_recorded_failure_never_blocks_the_genuine_success(stack: Stack) -> None:
    event = await stack.create_event(capacity=3, price=100_000)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "failed-first", tt, 2)
    ref = txn_ref(order)
    # A signed failure for the reference arrives first (a stale or spoofed-by-a-bug result: it is recorded).
    assert await record_a_failure(stack, ref, 200_000) == "00"
    assert await recorded(stack, ref) == {"outcome": "FAILED", "source": "ipn", "replaced": False}

    await pay_with_simulator(order["payment_url"])  # VNPAY then says the money was taken
    await wait_status(stack, order["order_id"], "PAID")
    assert await ipn_codes(stack, ref) == ["00"]
    assert await recorded(stack, ref) == {"outcome": "SUCCEEDED", "source": "ipn", "replaced": True}
    assert await attempt_status(stack, ref) == "SUCCEEDED"
    # The attempt offered after the failure is closed: nothing more to pay.
    assert (
        await stack.db.fetchval(
            "SELECT status FROM payment.attempts WHERE order_id = $1 AND attempt = 2", uuid.UUID(order["order_id"])
        )
        == "ABANDONED"
    )
    assert await payment_rows(stack, order["order_id"]) == 1
    assert await stack.stock(tt) == (3, 0, 2)
    # A later failure for the same reference never undoes the success.
    again = signed_query(secret(stack), ipn_params(stack, ref, 200_000, "24"))
    assert (await call_ipn(stack, again))["RspCode"] == "02"
    assert await stack.order_status(order["order_id"]) == "PAID"


async def test_reconciliation_asks_about_recorded_failures_and_the_providers_success_wins(stack: Stack) -> None:
    event = await stack.create_event(capacity=3, hold_seconds=4)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, "contradicted", tt, 1)
    ref = txn_ref(order)
    assert await record_a_failure(stack, ref, 100_000) == "00"
    await fault(stack, ref, ipn="drop")  # VNPAY's success IPN never reaches us: only querydr can tell
    await pay_with_simulator(order["payment_url"])
    await wait_status(stack, order["order_id"], "PAID")
    assert await recorded(stack, ref) == {"outcome": "SUCCEEDED", "source": "querydr", "replaced": True}
    assert await payment_rows(stack, order["order_id"]) == 1

    async def confirmed() -> bool:
        return bool(await stack.db.fetchval("SELECT outcome_confirmed FROM payment.attempts WHERE txn_ref = $1", ref))

    assert await eventually(confirmed, what="the attempt's outcome confirmed by querydr")
    assert await stack.stock(tt) == (3, 0, 1)
