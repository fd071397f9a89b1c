"""Issue 12's first contact: a new user checks out from what GET /events shows (each ticket type's id, name,
price and availability are in the listing)."""

from __future__ import annotations

from typing import Any

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
    async with stack.client("newcomer") as c:
        r = await c.post("/checkout", json={"items": [{"ticket_type_id": first, "quantity": 2}]})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "PENDING" and r.json()["total"] == 300_000 and r.json()["payment_url"]
