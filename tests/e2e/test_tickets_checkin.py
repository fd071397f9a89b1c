"""Issue 11, the buyer's and the door's half, end to end on the real stack: the gateway, inventory, the payment
service with the VNPAY simulator, the mailer with the test's SMTP server, PostgreSQL, RabbitMQ and Redis.

A buyer pages through their orders, fetches a paid order's tickets (the codes the ticket email carried, with a QR
image), and asks for the email again (a few times an hour); door staff admit tickets once, ten scanners at once
included, and see the check-ins per ticket type."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import httpx

from services.gateway.auth import issue_token
from services.paysim.client import pay_with_simulator
from shared import envelopes, topology
from shared.messages import ResendEmail
from tests.harness import Stack, eventually
from tests.mailer_support import publish

PROBLEM = "application/problem+json"


def new_buyer(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def email_of(buyer: str) -> str:
    return f"{buyer}@example.com"  # Stack.token's email claim, which the checkout carries into the order


def scanner(stack: Stack, name: str = "door") -> httpx.AsyncClient:
    token = issue_token(stack.settings, f"{name}-{uuid.uuid4().hex[:6]}", f"{name}@example.com", ["scanner"])
    return httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


async def hold(stack: Stack, buyer: str, tt: str, quantity: int = 1) -> dict[str, Any]:
    async with stack.client(buyer) as c:
        r = await c.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": quantity}]})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def paid_order(stack: Stack, buyer: str, tt: str, quantity: int = 1) -> dict[str, Any]:
    """Checkout, pay at the simulator, and wait until the buyer sees the order PAID."""
    order = await hold(stack, buyer, tt, quantity)
    await pay_with_simulator(order["payment_url"])

    async def paid() -> dict[str, Any] | None:
        async with stack.client(buyer) as c:
            body = (await c.get(f"/orders/{order['order_id']}")).json()
        return body if body["status"] == "PAID" else None

    return await eventually(paid, timeout=30, what="the order to be PAID")


async def mails_to(stack: Stack, to: str, count: int) -> list[Any] | None:
    mails = stack.smtp.handler.to(to)
    return mails if len(mails) >= count else None


async def tickets(stack: Stack, buyer: str, order_id: str) -> list[dict[str, Any]]:
    async with stack.client(buyer) as c:
        r = await c.get(f"/orders/{order_id}/tickets")
    assert r.status_code == 200, r.text
    return r.json()["tickets"]  # type: ignore[no-any-return]


def problem_type(r: httpx.Response) -> str:
    assert r.headers["content-type"] == PROBLEM, r.text
    return str(r.json()["type"]).rsplit("/", 1)[-1]


# --- the buyer ----------------------------------------------------------------------------------------------


async def test_orders_list_pages_newest_first_stable_under_inserts_and_only_the_callers(stack: Stack) -> None:
    event = await stack.create_event(capacity=50, per_user_limit=20)
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyer, other = new_buyer("pager"), new_buyer("other")
    mine = [(await hold(stack, buyer, tt))["order_id"] for _ in range(3)]
    theirs = (await hold(stack, other, tt))["order_id"]

    async with stack.client(buyer) as c:
        first = await c.get("/orders", params={"limit": 2})
        assert first.status_code == 200, first.text
        page1 = first.json()
        assert [o["order_id"] for o in page1["items"]] == [mine[2], mine[1]]  # newest first
        assert page1["next_cursor"]
        # Each item is what GET /orders/{id} answers for it.
        for item in page1["items"]:
            assert item == (await c.get(f"/orders/{item['order_id']}")).json()

        newer = (await hold(stack, buyer, tt))["order_id"]  # placed between two pages: shifts nothing
        second = await c.get("/orders", params={"limit": 2, "cursor": page1["next_cursor"]})
        assert second.status_code == 200, second.text
        page2 = second.json()
        assert [o["order_id"] for o in page2["items"]] == [mine[0]]
        assert page2["next_cursor"] is None

        everything = (await c.get("/orders")).json()  # default limit 20
        ids = [o["order_id"] for o in everything["items"]]
        assert ids == [newer, mine[2], mine[1], mine[0]] and theirs not in ids
        created = [datetime.fromisoformat(o["created_at"]) for o in everything["items"]]
        assert created == sorted(created, reverse=True)

        bad = await c.get("/orders", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and problem_type(bad) == "invalid-request"
        too_many = await c.get("/orders", params={"limit": 101})
        assert too_many.status_code == 422 and problem_type(too_many) == "invalid-request"

    async with stack.client(other) as c:
        assert [o["order_id"] for o in (await c.get("/orders")).json()["items"]] == [theirs]


async def test_a_paid_orders_tickets_carry_the_emails_codes_and_a_qr_image(stack: Stack) -> None:
    event = await stack.create_event(capacity=10, title="Đêm nhạc vé QR")
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyer = new_buyer("tickets")
    order = await paid_order(stack, buyer, tt, quantity=2)
    mails = await eventually(lambda: mails_to(stack, email_of(buyer), 1), timeout=30, what="the ticket email")
    assert mails is not None

    got = await tickets(stack, buyer, order["order_id"])
    assert len(got) == 2
    text = mails[0].part("plain")
    for t in got:
        assert t["code"] in text  # the very codes the ticket email carried
        assert len(t["code"]) >= 22  # 128 random bits, URL-safe base64
        assert t["ticket_type_id"] == tt
        assert t["qr_svg"].startswith("<svg") and "</svg>" in t["qr_svg"]
    assert len({t["ticket_id"] for t in got}) == 2

    pending = await hold(stack, buyer, tt)
    async with stack.client(buyer) as c:
        r = await c.get(f"/orders/{pending['order_id']}/tickets")
    assert r.status_code == 409 and problem_type(r) == "order_not_paid"
    assert r.json()["order_status"] == "PENDING"

    async with stack.client(new_buyer("snoop")) as c:
        for path in (f"/orders/{order['order_id']}/tickets", f"/orders/{uuid.uuid4()}/tickets"):
            r = await c.get(path)
            assert r.status_code == 404 and problem_type(r) == "not-found"
            assert "code" not in r.text


async def test_resend_email_delivers_the_ticket_email_again_and_the_fourth_in_an_hour_is_429(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyer = new_buyer("resend")
    to = email_of(buyer)
    order = await paid_order(stack, buyer, tt)
    await eventually(lambda: mails_to(stack, to, 1), timeout=30, what="the ticket email")
    code = (await tickets(stack, buyer, order["order_id"]))[0]["code"]

    async with stack.client(buyer) as c:
        r = await c.post(f"/orders/{order['order_id']}/resend-email")
        assert r.status_code == 202, r.text
        assert r.json()["kind"] == "paid"
        mails = await eventually(lambda: mails_to(stack, to, 2), timeout=30, what="the resent ticket email")
        assert mails is not None
        again = mails[1]
        assert code in again.part("plain") and len(again.images) == 1
        assert again.message["Message-ID"] != mails[0].message["Message-ID"]  # a new email, not a duplicate

        for _ in range(2):
            r = await c.post(f"/orders/{order['order_id']}/resend-email")
            assert r.status_code == 202, r.text
        await eventually(lambda: mails_to(stack, to, 4), timeout=30, what="two more resent emails")
        fourth = await c.post(f"/orders/{order['order_id']}/resend-email")
        assert fourth.status_code == 429 and problem_type(fourth) == "rate-limited"
        retry_after = int(fourth.headers["Retry-After"])
        assert 0 < retry_after <= 3600

        pending = await hold(stack, buyer, tt)
        r = await c.post(f"/orders/{pending['order_id']}/resend-email")
        assert r.status_code == 409 and problem_type(r) == "no_email"

    async with stack.client(new_buyer("snoop")) as c:
        r = await c.post(f"/orders/{order['order_id']}/resend-email")
    assert r.status_code == 404 and problem_type(r) == "not-found"
    assert len(stack.smtp.handler.to(to)) == 4  # the first email and three resends, nothing more


async def test_a_redelivered_resend_is_sent_once_and_an_expired_orders_resend_is_its_expiry_email(
    stack: Stack,
) -> None:
    event = await stack.create_event(capacity=10, hold_seconds=1)
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyer = new_buyer("redeliver")
    to = email_of(buyer)
    order = await hold(stack, buyer, tt)
    mails = await eventually(lambda: mails_to(stack, to, 1), timeout=30, what="the expiry email")
    assert mails is not None and "hết hạn" in str(mails[0].message["Subject"])

    async with stack.client(buyer) as c:
        r = await c.post(f"/orders/{order['order_id']}/resend-email")
    assert r.status_code == 202 and r.json()["kind"] == "expired"
    mails = await eventually(lambda: mails_to(stack, to, 2), timeout=30, what="the resent expiry email")
    assert mails is not None and str(mails[1].message["Subject"]) == str(mails[0].message["Subject"])

    # The same resend delivered twice (a lost ack, an outbox relayed twice): its own message id, one email.
    again = ResendEmail(order_id=uuid.UUID(order["order_id"]), resend_id=uuid.uuid4(), requested_by="user:test")
    for _ in range(2):
        await publish(stack, topology.RESEND_EMAIL, again, envelopes.message_id(again))

    async def skipped_once() -> bool:
        row = await stack.db.fetchrow(
            "SELECT status, duplicates_skipped FROM mailer.emails WHERE order_id = $1 AND resend_id = $2",
            again.order_id,
            str(again.resend_id),
        )
        return row is not None and row["status"] == "sent" and row["duplicates_skipped"] == 1

    await eventually(skipped_once, timeout=30, what="the second delivery of the resend to be recognised")
    assert len(stack.smtp.handler.to(to)) == 3


# --- the door -----------------------------------------------------------------------------------------------


async def test_check_in_admits_once_then_409_with_the_first_admission_and_refuses_strangers(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    other_event = await stack.create_event(capacity=10, title="Another night")
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyer = new_buyer("door")
    order = await paid_order(stack, buyer, tt, quantity=2)
    codes = [t["code"] for t in await tickets(stack, buyer, order["order_id"])]
    url = f"/admin/events/{event['event_id']}/checkin"

    async with scanner(stack) as door:
        first = await door.post(url, json={"code": codes[0]})
        assert first.status_code == 200, first.text
        admitted = first.json()
        assert admitted["ticket_type_id"] == tt and admitted["ticket_id"] and admitted["admitted_at"]

        second = await door.post(url, json={"code": codes[0]})
        assert second.status_code == 409 and problem_type(second) == "already_admitted"
        assert datetime.fromisoformat(second.json()["admitted_at"]) == datetime.fromisoformat(admitted["admitted_at"])

        unknown = await door.post(url, json={"code": "x" * 22})
        assert unknown.status_code == 404 and problem_type(unknown) == "not-found"

        wrong = await door.post(f"/admin/events/{other_event['event_id']}/checkin", json={"code": codes[1]})
        assert wrong.status_code == 422 and problem_type(wrong) == "wrong_event"
        assert "ticket_id" not in wrong.json()

        # Only the check-in routes are open to scanners.
        r = await door.post("/admin/events", json={})
        assert r.status_code == 403 and problem_type(r) == "forbidden"

    async with stack.client(buyer) as c:  # a plain buyer, even with the code in hand
        r = await c.post(url, json={"code": codes[1]})
        assert r.status_code == 403 and problem_type(r) == "forbidden"
        r = await c.get(f"/admin/events/{event['event_id']}/checkins")
        assert r.status_code == 403
    async with httpx.AsyncClient(base_url=stack.base_url) as anonymous:
        assert (await anonymous.post(url, json={"code": codes[1]})).status_code == 401
    async with stack.client("organiser", admin=True) as admin:  # admins may scan too
        r = await admin.post(url, json={"code": codes[1]})
        assert r.status_code == 200, r.text


async def test_ten_scanners_presenting_one_code_at_once_admit_it_exactly_once(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyer = new_buyer("crowd")
    order = await paid_order(stack, buyer, tt)
    code = (await tickets(stack, buyer, order["order_id"]))[0]["code"]
    url = f"/admin/events/{event['event_id']}/checkin"
    doors = [scanner(stack, f"door{i}") for i in range(10)]
    try:
        answers = await asyncio.gather(*(d.post(url, json={"code": code}) for d in doors))
    finally:
        for d in doors:
            await d.aclose()
    assert Counter(r.status_code for r in answers) == {200: 1, 409: 9}
    winner = next(r for r in answers if r.status_code == 200).json()
    for r in answers:
        if r.status_code == 409:
            assert problem_type(r) == "already_admitted"
            assert datetime.fromisoformat(r.json()["admitted_at"]) == datetime.fromisoformat(winner["admitted_at"])
    assert (
        await stack.db.fetchval(
            "SELECT count(*) FROM inventory.tickets WHERE admitted_at IS NOT NULL AND code = $1", code
        )
        == 1
    )


async def test_a_ticket_of_an_order_no_longer_paid_is_void_at_the_door(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyer = new_buyer("void")
    order = await paid_order(stack, buyer, tt)
    code = (await tickets(stack, buyer, order["order_id"]))[0]["code"]
    async with stack.client("void-organiser", admin=True) as organiser:
        refunded = await organiser.post(f"/admin/orders/{order['order_id']}/refund")
    assert refunded.status_code == 202, refunded.text
    async with scanner(stack) as door:
        r = await door.post(f"/admin/events/{event['event_id']}/checkin", json={"code": code})
    assert r.status_code == 409 and problem_type(r) == "ticket_void"
    assert r.json()["order_status"] in ("REFUND_PENDING", "REFUNDED")  # the provider may have confirmed already
    assert await stack.db.fetchval("SELECT admitted_at FROM inventory.tickets WHERE code = $1", code) is None


async def test_a_refund_racing_check_ins_admits_at_most_once_and_never_after_the_refund(stack: Stack) -> None:
    """The refund (inventory: the order row FOR UPDATE) and a check-in (the order row FOR SHARE, then the ticket)
    serialise on the order: either a scan took the row first and admitted the ticket (once), or the refund did and
    every scan finds the ticket void. Both ways, after the refund the code never admits anyone."""
    event = await stack.create_event(capacity=20)
    door_url = f"/admin/events/{event['event_id']}/checkin"
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with scanner(stack) as door, stack.client("race-organiser", admin=True) as organiser:
        for _ in range(4):
            buyer = new_buyer("race")
            order = await paid_order(stack, buyer, tt)
            code = (await tickets(stack, buyer, order["order_id"]))[0]["code"]
            refund, *scans = await asyncio.gather(
                organiser.post(f"/admin/orders/{order['order_id']}/refund"),
                *(door.post(door_url, json={"code": code}) for _ in range(5)),
            )
            assert refund.status_code == 202, refund.text
            admitted = [r for r in scans if r.status_code == 200]
            assert len(admitted) <= 1, [r.text for r in scans]
            assert all(r.status_code == 409 for r in scans if r.status_code != 200), [r.text for r in scans]
            refusals = {problem_type(r) for r in scans if r.status_code == 409}
            assert refusals <= {"already_admitted", "ticket_void"}, refusals
            row = await stack.db.fetchrow("SELECT admitted_at, voided_at FROM inventory.tickets WHERE code = $1", code)
            assert row is not None and row["voided_at"] is not None  # the refund voided it either way
            assert (row["admitted_at"] is not None) == bool(admitted)  # an admission a scanner was told of, only
            after = await door.post(door_url, json={"code": code})
            assert after.status_code == 409 and problem_type(after) == "ticket_void"
            await wait_until_refunded(stack, order["order_id"])


async def wait_until_refunded(stack: Stack, order_id: str) -> None:
    async def refunded() -> bool:
        return await stack.order_status(order_id) == "REFUNDED"

    await eventually(refunded, timeout=30, what=f"order {order_id} REFUNDED")


async def test_the_check_in_summary_counts_per_ticket_type_and_lists_the_latest_first(stack: Stack) -> None:
    event = await stack.create_event(capacity=10, extra_types=1)
    standard, vip = (t["ticket_type_id"] for t in event["ticket_types"])
    buyer = new_buyer("summary")
    first = await paid_order(stack, buyer, standard, quantity=2)
    second = await paid_order(stack, buyer, vip, quantity=1)
    codes = [t["code"] for t in await tickets(stack, buyer, first["order_id"])]
    vip_code = (await tickets(stack, buyer, second["order_id"]))[0]["code"]
    url = f"/admin/events/{event['event_id']}/checkin"
    admitted = []
    async with scanner(stack) as door:
        for code in (codes[0], vip_code):
            r = await door.post(url, json={"code": code})
            assert r.status_code == 200, r.text
            admitted.append(r.json())
        r = await door.get(f"/admin/events/{event['event_id']}/checkins")
        assert r.status_code == 200, r.text
        summary = r.json()
        missing = await door.get(f"/admin/events/{uuid.uuid4()}/checkins")
        assert missing.status_code == 404 and problem_type(missing) == "not-found"
    per_type = {t["ticket_type_id"]: (t["issued"], t["admitted"]) for t in summary["ticket_types"]}
    assert per_type == {standard: (2, 1), vip: (1, 1)}
    assert [a["ticket_id"] for a in summary["latest"]] == [admitted[1]["ticket_id"], admitted[0]["ticket_id"]]


async def test_the_checkin_command_admits_once_and_says_why_not_in_one_line(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyer = new_buyer("cli")
    order = await paid_order(stack, buyer, tt)
    code = (await tickets(stack, buyer, order["order_id"]))[0]["code"]

    async def run(*args: str) -> tuple[int, str, str]:
        return await stack.run_cli("checkin", *args)

    rc, out, err = await run(code, "--event", event["event_id"])
    assert rc == 0, err
    assert out.startswith("admitted: ticket ")
    rc, out, err = await run(code, "--event", event["event_id"])
    assert rc == 1 and out == ""
    assert err.strip().startswith("Error: 409 already_admitted: admitted at ") and len(err.strip().splitlines()) == 1
    rc, out, err = await run("no-such-code", "--event", event["event_id"], "--json")
    assert rc == 1 and '"outcome":"not_found"' in out
