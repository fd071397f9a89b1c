"""Issue 12's first contact, the README's walkthrough: an event is created, a new user finds it in GET /events
(each ticket type's id, name, price and availability are in the listing), checks out from it, pays on the
simulator's page (the form the README's curl posts), and the ticket email arrives."""

from __future__ import annotations

from typing import Any

from services.paysim.client import pay_with_simulator
from tests.e2e.test_payments import wait_status
from tests.harness import Stack, eventually


async def test_a_buyer_checks_out_from_the_events_listing(stack: Stack) -> None:
    event = await stack.create_event(capacity=7, price=150_000, title="First contact", extra_types=1)

    async def listed() -> dict[str, Any] | None:
        async with stack.client("newcomer") as c:
            r = await c.get("/events", params={"limit": 100})
        assert r.status_code == 200, r.text
        return next((e for e in r.json() if e["event_id"] == event["event_id"]), None)

    summary = await eventually(listed, what="the event in /events")
    assert [(t["name"], t["price"], t["available"]) for t in summary["ticket_types"]] == [
        ("Type 0", 150_000, 7),
        ("Type 1", 150_000, 7),
    ]
    assert {t["ticket_type_id"] for t in summary["ticket_types"]} == {
        t["ticket_type_id"] for t in event["ticket_types"]
    }
    first = summary["ticket_types"][0]["ticket_type_id"]
    buyer = f"newcomer-{event['event_id'][:8]}"
    async with stack.client(buyer) as c:
        r = await c.post("/checkout", json={"items": [{"ticket_type_id": first, "quantity": 2}]})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["status"] == "PENDING" and order["total"] == 300_000 and order["payment_url"]

    await pay_with_simulator(order["payment_url"])  # GET the payment page, POST its form with action=approve
    await wait_status(stack, order["order_id"], "PAID")

    async def emailed() -> bool:
        return len(stack.smtp.handler.to(f"{buyer}@example.com")) == 1

    await eventually(emailed, timeout=30, what="the ticket email")
