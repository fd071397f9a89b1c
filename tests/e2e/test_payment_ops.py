"""Payment operator actions end to end: a 07 payment held for review is accepted or rejected by an admin over
HTTP, a refused refund is listed and retried; every action goes gateway -> RabbitMQ -> payment service."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from services.paysim.client import pay_with_simulator
from tests.e2e.test_payments import (
    checkout,
    fault,
    late_payer_loses_the_seat,
    resend_ipn,
    sim_txn,
    txn_ref,
    wait_status,
)
from tests.harness import Stack, eventually

ADMIN = "payops-admin"


async def admin(stack: Stack, method: str, path: str) -> httpx.Response:
    async with stack.client(ADMIN, admin=True) as c:
        return await c.request(method, f"/admin/payments{path}")


async def in_review(stack: Stack) -> list[str]:
    r = await admin(stack, "GET", "/review")
    assert r.status_code == 200, r.text
    return [row["txn_ref"] for row in r.json()]


async def failed_refunds(stack: Stack) -> dict[str, dict[str, Any]]:
    r = await admin(stack, "GET", "/refunds/failed")
    assert r.status_code == 200, r.text
    return {row["txn_ref"]: row for row in r.json()}


async def held_for_review(
    stack: Stack, user: str, capacity: int = 4, hold_seconds: int = 900
) -> tuple[str, dict[str, Any], str]:
    """A 07 (suspected fraud) payment: money taken, order PENDING, attempt REVIEW and listed for an operator."""
    event = await stack.create_event(capacity=capacity, hold_seconds=hold_seconds)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await checkout(stack, user, tt, 1)
    ref = txn_ref(order)
    await pay_with_simulator(order["payment_url"], response_code="07")

    async def listed() -> bool:
        return ref in await in_review(stack)

    await eventually(listed, what="the attempt in the review list")
    assert await stack.order_status(order["order_id"]) == "PENDING"
    return tt, order, ref


async def audit(stack: Stack, ref: str) -> list[tuple[str, str, str]]:
    rows = await stack.db.fetch(
        "SELECT actor, action, result FROM payment.audit_log WHERE target = $1 ORDER BY id", ref
    )
    return [(r["actor"], r["action"], r["result"]) for r in rows]


async def test_accepting_a_review_pays_the_order_once(stack: Stack) -> None:
    tt, order, ref = await held_for_review(stack, "reviewed-buyer")

    # Two operators click at once: one conditional UPDATE wins, the other is told 409 and changes nothing.
    r, other = await asyncio.gather(
        admin(stack, "POST", f"/review/{ref}/accept"), admin(stack, "POST", f"/review/{ref}/accept")
    )
    assert sorted([r.status_code, other.status_code]) == [200, 409], (r.text, other.text)
    r = r if r.status_code == 200 else other
    assert r.json()["attempt_status"] == "ACCEPTED"
    await wait_status(stack, order["order_id"], "PAID")
    assert await stack.stock(tt) == (4, 0, 1)
    assert ref not in await in_review(stack)

    again = await admin(stack, "POST", f"/review/{ref}/accept")
    assert again.status_code == 409, again.text
    assert again.headers["content-type"].startswith("application/problem+json")
    rejected_late = await admin(stack, "POST", f"/review/{ref}/reject")
    assert rejected_late.status_code == 409
    assert await stack.stock(tt) == (4, 0, 1)
    assert (
        await stack.db.fetchval(
            "SELECT count(*) FROM inventory.order_payments WHERE order_id = $1", uuid.UUID(order["order_id"])
        )
        == 1
    )
    assert (await sim_txn(stack, ref))["refunded"] is False
    actor = f"user:{ADMIN}"
    assert sorted(await audit(stack, ref)) == sorted(
        [
            (actor, "accept", "accepted"),
            (actor, "accept", "no_op"),
            (actor, "accept", "no_op"),
            (actor, "reject", "no_op"),
        ]
    )
    missing = await admin(stack, "POST", "/review/NOSUCHREF01/accept")
    assert missing.status_code == 404


async def test_rejecting_a_review_refunds_it_and_the_order_expires(stack: Stack) -> None:
    tt, order, ref = await held_for_review(stack, "rejected-buyer", hold_seconds=4)

    r = await admin(stack, "POST", f"/review/{ref}/reject")
    assert r.status_code == 200, r.text
    assert r.json()["attempt_status"] == "REJECTED" and r.json()["refund_status"] == "CONFIRMED"
    assert (await sim_txn(stack, ref))["refunded"] is True
    assert await stack.order_status(order["order_id"]) == "PENDING"  # untouched: the hold runs out as usual
    await wait_status(stack, order["order_id"], "EXPIRED")
    assert await stack.stock(tt) == (4, 0, 0)
    assert (await admin(stack, "POST", f"/review/{ref}/accept")).status_code == 409
    assert (await admin(stack, "POST", f"/refunds/{ref}/retry")).status_code == 409  # confirmed: nothing to retry
    assert [a[1:] for a in await audit(stack, ref)] == [
        ("reject", "rejected"),
        ("refund", "confirmed"),
        ("accept", "no_op"),
        ("retry_refund", "no_op"),
    ]


async def test_refused_review_refund_is_listed_and_retried(stack: Stack) -> None:
    _, order, ref = await held_for_review(stack, "refund-refused-buyer")
    await fault(stack, ref, refund_refused=True)

    r = await admin(stack, "POST", f"/review/{ref}/reject")
    assert r.status_code == 200, r.text
    assert r.json()["refund_status"] == "FAILED"
    failed = await failed_refunds(stack)
    assert failed[ref]["kind"] == "rejected_review" and failed[ref]["order_id"] == order["order_id"]

    still = await admin(stack, "POST", f"/refunds/{ref}/retry")  # the provider still refuses
    assert still.status_code == 502, still.text
    assert ref in await failed_refunds(stack)

    await fault(stack, ref, refund_refused=False)
    ok = await admin(stack, "POST", f"/refunds/{ref}/retry")
    assert ok.status_code == 200, ok.text
    assert ok.json()["refund_status"] == "CONFIRMED"
    assert (await sim_txn(stack, ref))["refunded"] is True
    assert ref not in await failed_refunds(stack)
    assert (await admin(stack, "POST", f"/refunds/{ref}/retry")).status_code == 409
    assert [a[1:] for a in await audit(stack, ref)] == [
        ("reject", "rejected"),
        ("refund", "failed"),
        ("retry_refund", "retrying"),
        ("refund", "failed"),
        ("retry_refund", "retrying"),
        ("refund", "confirmed"),
        ("retry_refund", "no_op"),
    ]


async def test_refused_late_payment_refund_is_retried_to_refunded(stack: Stack) -> None:
    late, ref, tt = await late_payer_loses_the_seat(stack, "late-refused", "on-time-winner", refund_refused=True)

    await resend_ipn(stack, ref)
    await wait_status(stack, late["order_id"], "REFUND_PENDING")

    async def listed() -> dict[str, Any] | None:
        return (await failed_refunds(stack)).get(ref)

    row = await eventually(listed, what="the refused refund in the failed list")
    assert row["kind"] == "late_payment"

    await fault(stack, ref, refund_refused=False)
    r = await admin(stack, "POST", f"/refunds/{ref}/retry")
    assert r.status_code == 200, r.text
    await wait_status(stack, late["order_id"], "REFUNDED")
    assert (await sim_txn(stack, ref))["refunded"] is True
    assert await stack.stock(tt) == (1, 0, 1)


async def test_payment_operations_are_admin_only(stack: Stack) -> None:
    async with stack.client("not-an-admin") as c:
        for method, path in [
            ("GET", "/review"),
            ("POST", "/review/ABC01/accept"),
            ("POST", "/review/ABC01/reject"),
            ("GET", "/refunds/failed"),
            ("POST", "/refunds/ABC01/retry"),
        ]:
            r = await c.request(method, f"/admin/payments{path}")
            assert r.status_code == 403, (path, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
    assert await stack.db.fetchval("SELECT count(*) FROM payment.audit_log WHERE actor = 'user:not-an-admin'") == 0


async def ticketing_cli(stack: Stack, *args: str) -> tuple[int, str]:
    """Run `ticketing payments ...` as an operator would, against this run's broker and prefix."""
    code, out, err = await stack.run_cli("payments", *args)
    return code, out + err


async def test_cli_lists_and_accepts_a_review(stack: Stack) -> None:
    _, order, ref = await held_for_review(stack, "cli-reviewed-buyer")

    code, out = await ticketing_cli(stack, "review", "ls", "--json", "--actor", "ops-oncall")
    assert code == 0, out
    assert ref in [row["txn_ref"] for row in json.loads(out)]
    code, out = await ticketing_cli(stack, "review", "accept", ref, "--actor", "ops-oncall")
    assert code == 0, out
    await wait_status(stack, order["order_id"], "PAID")
    code, out = await ticketing_cli(stack, "review", "accept", ref, "--actor", "ops-oncall")
    assert code == 1 and "409" in out, out
    code, out = await ticketing_cli(stack, "refunds", "ls", "--json", "--actor", "ops-oncall")
    assert code == 0 and ref not in out, out
    assert await audit(stack, ref) == [("cli:ops-oncall", "accept", "accepted"), ("cli:ops-oncall", "accept", "no_op")]


async def test_accepting_a_review_after_the_stock_is_gone_refunds_it(stack: Stack) -> None:
    tt, order, ref = await held_for_review(stack, "reviewed-too-late", capacity=1, hold_seconds=3)
    await wait_status(stack, order["order_id"], "EXPIRED")
    winner = await checkout(stack, "bought-meanwhile", tt, 1)
    await pay_with_simulator(winner["payment_url"])
    await wait_status(stack, winner["order_id"], "PAID")

    r = await admin(stack, "POST", f"/review/{ref}/accept")  # inventory's late-sale rule decides: no stock
    assert r.status_code == 200, r.text
    await wait_status(stack, order["order_id"], "REFUNDED")
    assert (await sim_txn(stack, ref))["refunded"] is True
    assert await stack.stock(tt) == (1, 0, 1)
