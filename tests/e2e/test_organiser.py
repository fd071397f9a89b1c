"""The organiser's actions end to end (issue 11): refund a paid order, cancel an event (also one with 2,000
orders, interrupted by a SIGKILL of inventory), the sales report and the accounting CSV. Real processes: gateway ->
RabbitMQ -> inventory -> outbox -> payment service -> VNPAY simulator -> inventory -> mailer -> SMTP."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from services.gateway.auth import issue_token
from services.paysim.client import pay_with_simulator
from shared import event_reports
from shared.settings import Settings
from tests.e2e.test_faults import SALE_SERVICES, FaultStack, own_stack
from tests.e2e.test_payments import checkout, fault, sim_txn, txn_ref, wait_status
from tests.harness import Stack, eventually

ADMIN = "organiser-admin"


async def admin(stack: Stack, method: str, path: str, **kw: Any) -> httpx.Response:
    async with stack.client(ADMIN, admin=True) as c:
        return await c.request(method, path, **kw)


async def paid_order(stack: Stack, user: str, tt: str, quantity: int = 1) -> dict[str, Any]:
    order = await checkout(stack, user, tt, quantity)
    await pay_with_simulator(order["payment_url"])
    await wait_status(stack, order["order_id"], "PAID")
    return order


def mails(stack: Stack, user: str, kind: str, order_id: str) -> list[Any]:
    """What the test's SMTP server received for this buyer: the (kind, order) email by its Message-ID."""
    want = f"<{kind}.{order_id}@ticketing>"
    return [m for m in stack.smtp.handler.to(f"{user}@example.com") if m.message["Message-ID"] == want]


async def one_mail(stack: Stack, user: str, kind: str, order_id: str) -> Any:
    async def arrived() -> list[Any]:
        return mails(stack, user, kind, order_id)

    found = await eventually(arrived, timeout=30, what=f"the {kind} email of order {order_id}")
    assert len(found) == 1, found
    return found[0]


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    return r.json()  # type: ignore[no-any-return]


async def event_admin(stack: Stack, event_id: str) -> dict[str, Any]:
    r = await admin(stack, "GET", f"/admin/events/{event_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# --- refunds -------------------------------------------------------------------------------------------


async def test_refunding_a_paid_order_voids_its_tickets_returns_its_stock_and_emails_the_buyer(stack: Stack) -> None:
    event = await stack.create_event(capacity=3, per_user_limit=2)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await paid_order(stack, "refund-buyer", tt, 2)
    ref = txn_ref(order)
    assert await stack.stock(tt) == (3, 0, 2)

    r = await admin(stack, "POST", f"/admin/orders/{order['order_id']}/refund")
    assert r.status_code == 202, r.text
    assert r.json()["outcome"] == "accepted" and r.json()["status"] == "REFUND_PENDING"
    # Returned when inventory accepted the refund: resellable at once, before the provider confirms.
    assert await stack.stock(tt) == (3, 0, 0)
    voided = await stack.db.fetch(
        "SELECT voided_at FROM inventory.tickets WHERE order_id = $1", uuid.UUID(order["order_id"])
    )
    assert len(voided) == 2 and all(t["voided_at"] is not None for t in voided)
    assert (
        await stack.db.fetchval(
            "SELECT refund_requested_by FROM inventory.order_payments WHERE order_id = $1", uuid.UUID(order["order_id"])
        )
        == f"user:{ADMIN}"
    )

    await wait_status(stack, order["order_id"], "REFUNDED")
    assert (await sim_txn(stack, ref))["refunded"] is True
    mail = await one_mail(stack, "refund-buyer", "refunded", order["order_id"])
    assert "hoàn tiền" in mail.part("plain")  # Vietnamese: the organiser refunded the order

    again = await admin(stack, "POST", f"/admin/orders/{order['order_id']}/refund")  # idempotent
    assert again.status_code == 202 and again.json()["outcome"] == "already", again.text
    assert await stack.stock(tt) == (3, 0, 0)
    refunds = await stack.db.fetchval(
        "SELECT count(*) FROM payment.refunds WHERE order_id = $1", uuid.UUID(order["order_id"])
    )
    assert refunds == 1
    assert await stack.order_status(order["order_id"]) == "REFUNDED"

    # The stock is on sale again, and the buyer's per-user holdings went down with the refund.
    again_bought = await checkout(stack, "refund-buyer", tt, 2)
    assert again_bought["status"] == "PENDING"
    assert len(mails(stack, "refund-buyer", "refunded", order["order_id"])) == 1

    pending = is_problem(await admin(stack, "POST", f"/admin/orders/{again_bought['order_id']}/refund"), 409)
    assert pending["reason"] == "order_not_paid" and pending["order_status"] == "PENDING"
    assert await stack.order_status(again_bought["order_id"]) == "PENDING"
    is_problem(await admin(stack, "POST", f"/admin/orders/{uuid.uuid4()}/refund"), 404)


async def test_a_refund_the_provider_refuses_is_listed_for_operators_and_retried(stack: Stack) -> None:
    event = await stack.create_event(capacity=2)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await paid_order(stack, "refused-refund-buyer", tt)
    ref = txn_ref(order)
    await fault(stack, ref, refund_refused=True)

    r = await admin(stack, "POST", f"/admin/orders/{order['order_id']}/refund")
    assert r.status_code == 202, r.text

    async def listed() -> dict[str, Any] | None:
        rows = (await admin(stack, "GET", "/admin/payments/refunds/failed")).json()
        return next((row for row in rows if row["txn_ref"] == ref), None)

    row = await eventually(listed, what="the refused refund in the operators' list")
    assert row["order_id"] == order["order_id"] and row["status"] == "FAILED"
    assert row["reason"] == "refunded by the organiser"
    assert await stack.order_status(order["order_id"]) == "REFUND_PENDING"
    assert await stack.stock(tt) == (2, 0, 0)  # the tickets are void and back on sale all the same
    assert mails(stack, "refused-refund-buyer", "refunded", order["order_id"]) == []

    await fault(stack, ref, refund_refused=False)
    retried = await admin(stack, "POST", f"/admin/payments/refunds/{ref}/retry")
    assert retried.status_code == 200, retried.text
    await wait_status(stack, order["order_id"], "REFUNDED")
    await one_mail(stack, "refused-refund-buyer", "refunded", order["order_id"])


# --- cancelling an event -----------------------------------------------------------------------------------


async def homepage_ids(stack: Stack) -> set[str]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        r = await c.get("/events", params={"limit": 100})
    assert r.status_code == 200, r.text
    return {e["event_id"] for e in r.json()}


async def search_ids(stack: Stack, q: str) -> set[str]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
        r = await c.get("/search", params={"q": q})
    assert r.status_code == 200, r.text
    return {h["event_id"] for h in r.json()["results"]}


async def test_cancelling_an_event_stops_its_sale_cancels_holds_refunds_sales_and_emails_each_buyer_once(
    stack: Stack,
) -> None:
    title = f"Hòa nhạc huỷ {uuid.uuid4().hex[:6]}"
    event = await stack.create_event(capacity=10, title=title, extra_types=1)
    event_id = event["event_id"]
    tt, other = (t["ticket_type_id"] for t in event["ticket_types"])
    pending = {user: await checkout(stack, user, tt, 2) for user in ("cx-hold-1", "cx-hold-2")}
    paid = {
        "cx-paid-1": await paid_order(stack, "cx-paid-1", tt),
        "cx-paid-2": await paid_order(stack, "cx-paid-2", other, 3),
    }

    async def offered() -> bool:
        return event_id in await homepage_ids(stack)

    await eventually(offered, what="the event on the homepage")
    before = await event_admin(stack, event_id)
    assert before["status"] == "ON_SALE" and before["progress"]["pending_to_cancel"] == 0

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:  # its page, now in the cache
        assert (await c.get(f"/events/{event_id}")).json()["status"] == "ON_SALE"

    r = await admin(stack, "POST", f"/admin/events/{event_id}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["outcome"] == "accepted" and r.json()["progress"]["status"] == "CANCELLING"

    async with stack.client("cx-late-buyer") as c:  # the sale stops at once
        refused = await c.post("/checkout", json={"items": [{"ticket_type_id": other, "quantity": 1}]})
    assert is_problem(refused, 409)["reason"] == "event_cancelled"

    async def finished() -> dict[str, Any] | None:
        shown = await event_admin(stack, event_id)
        p = shown["progress"]
        return shown if shown["status"] == "CANCELLED" and p["refunds_pending"] == 0 else None

    shown = await eventually(finished, timeout=40, what="the cancellation finished")
    assert shown["progress"] == {
        "pending_to_cancel": 0,
        "paid_to_refund": 0,
        "refunds_pending": 0,
        "done": 4,
        "batches": 1,
    }
    for order in pending.values():
        assert await stack.order_status(order["order_id"]) == "CANCELLED"
    for order in paid.values():
        assert await stack.order_status(order["order_id"]) == "REFUNDED"
        assert (await sim_txn(stack, txn_ref(order)))["refunded"] is True
    assert await stack.stock(tt) == (10, 0, 0) and await stack.stock(other) == (10, 0, 0)

    async def unlisted() -> bool:
        return event_id not in await homepage_ids(stack) and event_id not in await search_ids(stack, title)

    await eventually(unlisted, what="the event gone from /events and /search")

    async def page_says_cancelled() -> bool:  # its page (cached) still answers, and says what happened
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as c:
            return (await c.get(f"/events/{event_id}")).json()["status"] == "CANCELLED"

    await eventually(page_says_cancelled, what="the event's page showing CANCELLED")

    for user, order in pending.items():
        mail = await one_mail(stack, user, "cancelled", order["order_id"])
        assert "huỷ" in mail.message["Subject"]
    for user, order in paid.items():
        await one_mail(stack, user, "refunded", order["order_id"])
    again = await admin(stack, "POST", f"/admin/events/{event_id}/cancel")
    assert again.status_code == 202 and again.json()["outcome"] == "already"
    for user, order in [*pending.items(), *paid.items()]:  # each buyer heard of it once, the repeat sent nothing
        kind = "cancelled" if user in pending else "refunded"
        assert len(mails(stack, user, kind, order["order_id"])) == 1
    assert (
        await stack.db.fetchval(
            "SELECT count(*) FROM mailer.emails WHERE order_id = ANY($1::uuid[]) AND kind IN ('cancelled', 'refunded')",
            [uuid.UUID(o["order_id"]) for o in [*pending.values(), *paid.values()]],
        )
        == 4
    )
    is_problem(await admin(stack, "POST", f"/admin/events/{uuid.uuid4()}/cancel"), 404)
    is_problem(await admin(stack, "GET", f"/admin/events/{uuid.uuid4()}"), 404)


# --- reports -------------------------------------------------------------------------------------------------


async def test_the_sales_report_counts_a_sale_a_refund_a_hold_and_an_admission(stack: Stack) -> None:
    event = await stack.create_event(capacity=5, price=150_000, extra_types=1)
    event_id = event["event_id"]
    tt, other = (t["ticket_type_id"] for t in event["ticket_types"])
    refunded = await paid_order(stack, "sales-refunded", tt, 2)
    kept = await paid_order(stack, "sales-kept", tt, 1)
    await checkout(stack, "sales-holding", other, 1)
    r = await admin(stack, "POST", f"/admin/orders/{refunded['order_id']}/refund")
    assert r.status_code == 202, r.text
    await wait_status(stack, refunded["order_id"], "REFUNDED")
    async with stack.client("sales-kept") as buyer:
        code = (await buyer.get(f"/orders/{kept['order_id']}/tickets")).json()["tickets"][0]["code"]
    admitted = await admin(stack, "POST", f"/admin/events/{event_id}/checkin", json={"code": code})
    assert admitted.status_code == 200, admitted.text

    r = await admin(stack, "GET", f"/admin/events/{event_id}/sales")
    assert r.status_code == 200, r.text
    report = r.json()
    lines = {line["ticket_type_id"]: line for line in report["ticket_types"]}
    fields = ("capacity", "held", "sold", "available", "refunded", "admitted", "revenue")
    assert {f: lines[tt][f] for f in fields} == {
        "capacity": 5,
        "held": 0,
        "sold": 1,
        "available": 4,
        "refunded": 2,
        "admitted": 1,
        "revenue": 150_000,
    }
    assert {f: lines[other][f] for f in fields} == {
        "capacity": 5,
        "held": 1,
        "sold": 0,
        "available": 4,
        "refunded": 0,
        "admitted": 0,
        "revenue": 0,
    }
    assert report["totals"] == {
        "capacity": 10,
        "held": 1,
        "sold": 1,
        "available": 8,
        "refunded": 2,
        "admitted": 1,
        "revenue": 150_000,
    }
    is_problem(await admin(stack, "GET", f"/admin/events/{uuid.uuid4()}/sales"), 404)


def client_as(stack: Stack, sub: str, email: str) -> httpx.AsyncClient:
    token = issue_token(stack.settings, sub, email, [])
    return httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


async def test_the_orders_csv_keeps_vietnamese_names_and_defuses_formulas(stack: Stack) -> None:
    body = {
        "title": "Đêm nhạc Trịnh Công Sơn",
        "venue": "Nhà hát Lớn",
        "city": "Hà Nội",
        "starts_at": "2030-01-01T20:00:00+07:00",
        "ticket_types": [
            {"name": "Vé Hạng Ánh Dương", "price": 200_000, "capacity": 10},
            {"name": '=HYPERLINK("http://evil.example")', "price": 50_000, "capacity": 10},
        ],
    }
    r = await admin(stack, "POST", "/admin/events", json=body)
    assert r.status_code == 201, r.text
    event_id = r.json()["event_id"]
    vn, formula = (t["ticket_type_id"] for t in sorted(r.json()["ticket_types"], key=lambda t: -t["price"]))
    async with client_as(stack, "Nguyễn Thị Ánh", "anh@example.com") as c:
        held = await c.post("/checkout", json={"items": [{"ticket_type_id": vn, "quantity": 2}]})
    assert held.status_code == 201, held.text
    await pay_with_simulator(held.json()["payment_url"])
    await wait_status(stack, held.json()["order_id"], "PAID")
    async with client_as(stack, "@attacker+1", "formula@example.com") as c:
        other = await c.post("/checkout", json={"items": [{"ticket_type_id": formula, "quantity": 1}]})
    assert other.status_code == 201, other.text

    async with stack.client(ADMIN, admin=True) as c:
        r = await c.get(f"/admin/events/{event_id}/orders.csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv") and "charset=utf-8" in r.headers["content-type"]
    text = r.content.decode("utf-8-sig")  # UTF-8 with a byte-order mark (spreadsheets then read it as UTF-8)
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == event_reports.LEDGER_COLUMNS
    by_order = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    mine = by_order[held.json()["order_id"]]
    assert mine["user_id"] == "Nguyễn Thị Ánh" and mine["ticket_type_name"] == "Vé Hạng Ánh Dương"
    assert mine["status"] == "PAID" and mine["quantity"] == "2" and mine["unit_price"] == "200000"
    assert mine["line_total"] == "400000" and mine["paid_at"] and mine["txn_ref"] == txn_ref(held.json())
    theirs = by_order[other.json()["order_id"]]
    assert theirs["user_id"] == "'@attacker+1"
    assert theirs["ticket_type_name"] == '\'=HYPERLINK("http://evil.example")'
    assert theirs["status"] == "PENDING" and theirs["paid_at"] == ""
    is_problem(await admin(stack, "GET", f"/admin/events/{uuid.uuid4()}/orders.csv"), 404)


async def test_every_organiser_route_is_admin_only(stack: Stack) -> None:
    event = await stack.create_event(capacity=1)
    some = str(uuid.uuid4())
    async with stack.client("not-an-organiser") as c:
        for method, path in [
            ("POST", f"/admin/orders/{some}/refund"),
            ("POST", f"/admin/events/{event['event_id']}/cancel"),
            ("GET", f"/admin/events/{event['event_id']}"),
            ("GET", f"/admin/events/{event['event_id']}/sales"),
            ("GET", f"/admin/events/{event['event_id']}/orders.csv"),
        ]:
            is_problem(await c.request(method, path), 403)
    assert (await event_admin(stack, event["event_id"]))["status"] == "ON_SALE"


async def cli(stack: Stack, *args: str) -> tuple[int, str]:
    code, out, err = await stack.run_cli(*args)
    return code, out + err


async def test_the_cli_refunds_an_order_and_cancels_and_shows_an_event(stack: Stack) -> None:
    event = await stack.create_event(capacity=4)
    tt = event["ticket_types"][0]["ticket_type_id"]
    order = await paid_order(stack, "cli-refund-buyer", tt)
    holding = await checkout(stack, "cli-holding-buyer", tt)

    code, out = await cli(stack, "orders", "refund", holding["order_id"])
    assert code == 1 and "409 order_not_paid" in out, out
    code, out = await cli(stack, "orders", "refund", order["order_id"], "--json", "--actor", "oncall")
    assert code == 0, out
    assert json.loads(out)["outcome"] == "accepted"
    await wait_status(stack, order["order_id"], "REFUNDED")

    code, out = await cli(stack, "events", "cancel", event["event_id"], "--json")
    assert code == 0 and json.loads(out)["outcome"] == "accepted", out
    await wait_status(stack, holding["order_id"], "CANCELLED")

    async def shown() -> dict[str, Any] | None:
        code, out = await cli(stack, "events", "show", event["event_id"], "--json")
        assert code == 0, out
        body: dict[str, Any] = json.loads(out)
        return body if body["status"] == "CANCELLED" else None

    body = await eventually(shown, timeout=30, interval=0.5, what="the event CANCELLED in `events show`")
    assert body["progress"]["pending_to_cancel"] == 0 and body["progress"]["done"] == 1
    code, out = await cli(stack, "events", "show", str(uuid.uuid4()))
    assert code == 1 and "404" in out, out


# --- a cancellation of thousands of orders, interrupted ------------------------------------------------------

BULK_ORDERS = 2000
BULK_PAID = 6  # paid through the simulator (its refunds are real provider calls); the rest are holds
BATCH = 100


async def bulk_holds(stack: Stack, event_id: str, tt: str, price: int, count: int) -> list[uuid.UUID]:
    """``count`` PENDING holds of one ticket each, written straight into inventory's tables as a hold batch
    would leave them (order, item, the buyer's holding, the held counter). Placing 2,000 checkouts through HTTP
    costs minutes on this 2-core machine and tests nothing the cancellation depends on."""
    ids = [uuid.uuid4() for _ in range(count)]
    users = [f"bulk-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    async with stack.db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO inventory.orders (id, user_id, user_email, locale, event_id, status, total, expires_at) "
            "SELECT o.id, o.u, o.u || '@example.com', 'vi', $3, 'PENDING', $4, now() + interval '900 seconds' "
            "FROM unnest($1::uuid[], $2::text[]) AS o(id, u)",
            ids,
            users,
            uuid.UUID(event_id),
            price,
        )
        await conn.execute(
            "INSERT INTO inventory.order_items (order_id, ticket_type_id, quantity, unit_price) "
            "SELECT id, $2, 1, $3 FROM unnest($1::uuid[]) AS o(id)",
            ids,
            uuid.UUID(tt),
            price,
        )
        await conn.execute(
            "INSERT INTO inventory.user_holdings (user_id, ticket_type_id, quantity) "
            "SELECT u, $2, 1 FROM unnest($1::text[]) AS h(u)",
            users,
            uuid.UUID(tt),
        )
        await conn.execute("UPDATE inventory.ticket_types SET held = held + $2 WHERE id = $1", uuid.UUID(tt), count)
    return ids


@pytest.mark.slow
async def test_a_cancellation_of_2000_orders_survives_a_sigkill_of_inventory(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of 100 with a short pause, so that the kill lands with some batches done and others to do.
    monkeypatch.setenv("TICKETING_EVENT_CANCEL_BATCH_SIZE", str(BATCH))
    monkeypatch.setenv("TICKETING_EVENT_CANCEL_PAUSE_SECONDS", "0.2")
    async with own_stack(server_settings, monkeypatch, services=SALE_SERVICES) as fs:
        await cancel_under_a_kill(fs)


async def cancel_under_a_kill(fs: FaultStack) -> None:
    stack = fs.stack
    price = 120_000
    event = await stack.create_event(capacity=BULK_ORDERS + 100, price=price)
    event_id = event["event_id"]
    tt = event["ticket_types"][0]["ticket_type_id"]
    paid = {f"bulk-paid-{i}-{uuid.uuid4().hex[:6]}": "" for i in range(BULK_PAID)}
    for user in paid:
        paid[user] = (await paid_order(stack, user, tt))["order_id"]
    held = await bulk_holds(stack, event_id, tt, price, BULK_ORDERS - BULK_PAID)
    all_ids = [*held, *(uuid.UUID(o) for o in paid.values())]
    assert await stack.stock(tt) == (BULK_ORDERS + 100, BULK_ORDERS - BULK_PAID, BULK_PAID)

    r = await admin(stack, "POST", f"/admin/events/{event_id}/cancel")
    assert r.status_code == 202, r.text

    async def midway() -> dict[str, Any] | None:
        p = (await event_admin(stack, event_id))["progress"]
        return p if p["done"] > 0 and p["pending_to_cancel"] > 0 else None

    at_kill = await eventually(midway, timeout=60, interval=0.02, what="the cancellation under way")
    proc = fs.supervisor.procs["inventory"]
    os.kill(proc.pid, signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    killed_at = time.monotonic()
    after_kill = (await event_admin(stack, event_id))["progress"]
    assert after_kill["pending_to_cancel"] > 0, after_kill  # it really stopped midway

    async def restarted() -> bool:  # the supervisor's watch (as `ticketing up`) starts a new inventory
        new = fs.supervisor.procs["inventory"]
        return new is not proc and new.poll() is None

    await eventually(restarted, timeout=30, what="inventory restarted")

    async def finished() -> dict[str, Any] | None:
        shown = await event_admin(stack, event_id)
        return shown if shown["status"] == "CANCELLED" and shown["progress"]["refunds_pending"] == 0 else None

    shown = await eventually(finished, timeout=180, interval=0.5, what="the cancellation finished after the kill")
    print(f"killed at {at_kill}, finished {time.monotonic() - killed_at:.1f}s after the kill: {shown['progress']}")
    assert shown["progress"]["pending_to_cancel"] == 0 and shown["progress"]["paid_to_refund"] == 0
    assert shown["progress"]["done"] == BULK_ORDERS
    assert shown["progress"]["batches"] >= BULK_ORDERS // BATCH

    statuses = dict(
        await stack.db.fetch(
            "SELECT status, count(*) FROM inventory.orders WHERE event_id = $1 GROUP BY status", uuid.UUID(event_id)
        )
    )
    assert statuses == {"CANCELLED": BULK_ORDERS - BULK_PAID, "REFUNDED": BULK_PAID}, statuses
    # Each order was done exactly once: the counters move in the same transaction as the orders they count.
    counters = await stack.db.fetchrow(
        "SELECT orders_cancelled, orders_sent_to_refund FROM inventory.events WHERE id = $1", uuid.UUID(event_id)
    )
    assert tuple(counters) == (BULK_ORDERS - BULK_PAID, BULK_PAID)
    assert await stack.stock(tt) == (BULK_ORDERS + 100, 0, 0)
    assert (
        await stack.db.fetchval(
            "SELECT COALESCE(sum(quantity), 0) FROM inventory.user_holdings WHERE ticket_type_id = $1", uuid.UUID(tt)
        )
        == 0
    )
    refunds = await stack.db.fetch(
        "SELECT status FROM payment.refunds WHERE order_id = ANY($1::uuid[])", [uuid.UUID(o) for o in paid.values()]
    )
    assert [r["status"] for r in refunds] == ["CONFIRMED"] * BULK_PAID

    async def all_emailed() -> bool:
        sent = await stack.db.fetchval(
            "SELECT count(*) FROM mailer.emails WHERE order_id = ANY($1::uuid[]) AND kind IN ('cancelled', 'refunded') "
            "AND status = 'sent'",
            all_ids,
        )
        return int(sent) == BULK_ORDERS

    await eventually(all_emailed, timeout=240, interval=1, what="every buyer emailed")
    wanted = {f"<cancelled.{i}@ticketing>" for i in held} | {f"<refunded.{o}@ticketing>" for o in paid.values()}
    received = [str(m.message["Message-ID"]) for m in list(stack.smtp.handler.received)]
    mine = Counter(m for m in received if m in wanted)
    twice = {m: n for m, n in mine.items() if n > 1}
    assert not twice, f"emailed more than once: {twice}"
    assert set(mine) == wanted, f"{len(wanted - set(mine))} buyers not emailed"  # every buyer emailed, none twice
