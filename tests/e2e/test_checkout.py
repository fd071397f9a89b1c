"""The checkout pipeline end to end: HTTP gateway -> RabbitMQ -> inventory -> PostgreSQL, real processes."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import aiohttp
import httpx

from tests.harness import Stack, eventually


def checkout_body(ticket_type_id: str, quantity: int = 1) -> dict[str, object]:
    return {"items": [{"ticket_type_id": ticket_type_id, "quantity": quantity}]}


async def test_flash_sale_2000_attempts_500_buyers_100_tickets_never_oversells(stack: Stack) -> None:
    event = await stack.create_event(capacity=100, per_user_limit=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    buyers = [f"fan-{i}" for i in range(500)]
    tokens = {b: stack.token(b) for b in buyers}
    attempts = [buyers[i % 500] for i in range(2000)]
    random.Random(7).shuffle(attempts)
    # aiohttp: a client light enough that the load generator is not the bottleneck on two cores.
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(
        stack.base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as client:

        async def attempt(buyer: str) -> tuple[int, str, dict[str, object]]:
            async with client.post(
                "/checkout", json=checkout_body(tt), headers={"Authorization": f"Bearer {tokens[buyer]}"}
            ) as r:
                return r.status, r.headers.get("content-type", ""), await r.json(content_type=None)

        async with stack.watching_stock(tt) as watch:
            responses = await asyncio.gather(*(attempt(b) for b in attempts))

    codes = Counter(status for status, _, _ in responses)
    assert codes[201] == 100, codes
    assert codes[409] == 1900, codes
    assert not [r for r in responses if r[0] >= 500]
    assert all(
        body["reason"] == "sold_out" and ctype == "application/problem+json"
        for status, ctype, body in responses
        if status == 409
    )
    assert watch.violations == [] and watch.samples > 0
    assert await stack.stock(tt) == (100, 100, 0)
    held_orders = await stack.db.fetchval(
        "SELECT COALESCE(SUM(i.quantity), 0) FROM inventory.order_items i JOIN inventory.orders o ON o.id = i.order_id "
        "WHERE i.ticket_type_id = $1 AND o.status = 'PENDING'",
        uuid.UUID(tt),
    )
    assert held_orders == 100


async def test_per_user_limit_holds_under_20_parallel_checkouts_by_one_buyer(stack: Stack) -> None:
    event = await stack.create_event(capacity=100, per_user_limit=4)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client("greedy") as c:
        responses = await asyncio.gather(*(c.post("/checkout", json=checkout_body(tt)) for _ in range(20)))
    codes = Counter(r.status_code for r in responses)
    assert codes == {201: 4, 422: 16}, codes
    assert {r.json()["reason"] for r in responses if r.status_code == 422} == {"limit_exceeded"}
    assert await stack.stock(tt) == (100, 4, 0)


async def test_unpaid_hold_expires_and_stock_returns(stack: Stack) -> None:
    event = await stack.create_event(capacity=5, hold_seconds=2)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client("walks-away") as c:
        r = await c.post("/checkout", json=checkout_body(tt, 2))
        assert r.status_code == 201 and r.json()["status"] == "PENDING"
        order_id = r.json()["order_id"]
        assert await stack.stock(tt) == (5, 2, 0)

        async def expired() -> bool:
            got = await c.get(f"/orders/{order_id}")
            return got.json()["status"] == "EXPIRED"

        await eventually(expired, timeout=10, what="order EXPIRED")
        detail = (await c.get(f"/events/{event['event_id']}")).json()
    assert detail["ticket_types"][0]["available"] == 5
    assert await stack.stock(tt) == (5, 0, 0)


async def test_sweeper_releases_a_hold_whose_delay_message_was_lost(stack: Stack) -> None:
    event = await stack.create_event(capacity=5, hold_seconds=3)
    tt = event["ticket_types"][0]["ticket_type_id"]
    delay_queue = stack.names.hold_delay_queue(3)
    async with stack.client("lost-message") as c:
        r = await c.post("/checkout", json=checkout_body(tt))
        assert r.status_code == 201
    order_id = r.json()["order_id"]

    async def delay_message_queued() -> bool:
        return await stack.queue_depth(delay_queue) >= 1

    await eventually(delay_message_queued, what="the hold's delay message")
    channel = await stack.amqp.channel()
    await (await channel.declare_queue(delay_queue, passive=True)).purge()
    await channel.close()
    assert await stack.queue_depth(delay_queue) == 0

    async def expired() -> bool:
        return await stack.order_status(order_id) == "EXPIRED"

    await eventually(expired, timeout=10, what="the sweeper to expire the order")
    assert await stack.stock(tt) == (5, 0, 0)
    async with httpx.AsyncClient() as c:
        metrics = (await c.get(f"http://127.0.0.1:{stack.settings.inventory_port}/metrics")).text
    assert 'ticketing_holds_released_total{by="sweeper",status="EXPIRED"}' in metrics


async def test_buyer_cancel_releases_at_once_and_only_once(stack: Stack) -> None:
    event = await stack.create_event(capacity=3)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client("changes-mind") as c, stack.client("stranger") as other:
        order_id = (await c.post("/checkout", json=checkout_body(tt, 3))).json()["order_id"]
        assert (await other.post(f"/orders/{order_id}/cancel")).status_code == 404
        assert (await other.get(f"/orders/{order_id}")).status_code == 404
        results = await asyncio.gather(*(c.post(f"/orders/{order_id}/cancel") for _ in range(3)))
    assert sorted(r.status_code for r in results) == [200, 409, 409]
    assert await stack.stock(tt) == (3, 0, 0)
    assert await stack.order_status(order_id) == "CANCELLED"


async def test_same_idempotency_key_returns_the_same_order_and_holds_once(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client("retrier") as c, stack.client("someone-else") as other:
        headers = {"Idempotency-Key": "checkout-42"}
        responses = await asyncio.gather(
            *(c.post("/checkout", json=checkout_body(tt, 2), headers=headers) for _ in range(5))
        )
        again = await c.post("/checkout", json=checkout_body(tt, 2), headers=headers)
        changed = await c.post("/checkout", json=checkout_body(tt, 3), headers=headers)
        theirs = await other.post("/checkout", json=checkout_body(tt, 2), headers=headers)
    ids = {r.json()["order_id"] for r in [*responses, again]}
    assert len(ids) == 1 and all(r.status_code == 201 for r in [*responses, again])
    assert changed.status_code == 422 and changed.json()["type"].endswith("idempotency-key-reuse")
    assert theirs.status_code == 201 and theirs.json()["order_id"] not in ids
    assert await stack.stock(tt) == (10, 4, 0)


async def test_bad_input_gets_a_problem_and_holds_nothing(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client("sloppy") as c, stack.client("plain-user") as plain:
        cases = {
            "not json": await c.post("/checkout", content=b"{oops", headers={"content-type": "application/json"}),
            "no items": await c.post("/checkout", json={"items": []}),
            "zero": await c.post("/checkout", json=checkout_body(tt, 0)),
            "negative": await c.post("/checkout", json=checkout_body(tt, -2)),
            "huge": await c.post("/checkout", json=checkout_body(tt, 10_000)),
            "bad id": await c.post("/checkout", json={"items": [{"ticket_type_id": "nope", "quantity": 1}]}),
            "extra field": await c.post("/checkout", json={"items": [], "discount": 100}),
            "unknown type": await c.post("/checkout", json=checkout_body(str(uuid.uuid4()))),
            "over order max": await c.post("/checkout", json=checkout_body(tt, 50)),
        }
        anonymous = await httpx.AsyncClient(base_url=stack.base_url).post("/checkout", json=checkout_body(tt))
        not_admin = await plain.post("/admin/events", json={})
        past = await (stack.client("organiser", admin=True)).post(
            "/admin/events", json={"title": "x", "venue": "y", "city": "z", "starts_at": "2030-01-01T00:00:00"}
        )
    for name, r in cases.items():
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", name
        assert r.json()["status"] == 422
    assert cases["unknown type"].json()["reason"] == "unknown_ticket_type"
    assert anonymous.status_code == 401 and anonymous.headers["content-type"] == "application/problem+json"
    assert not_admin.status_code == 403
    assert past.status_code == 422
    assert await stack.stock(tt) == (10, 0, 0)


async def test_the_sold_out_gate_refuses_at_once_and_opens_when_stock_comes_back(stack: Stack) -> None:
    event = await stack.create_event(capacity=1)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client("gate-first") as first, stack.client("gate-second") as second:
        held = await first.post("/checkout", json=checkout_body(tt))
        assert held.status_code == 201, held.text
        refused = await second.post("/checkout", json=checkout_body(tt), headers={"Idempotency-Key": "gate-1"})
        assert refused.status_code == 409 and refused.json()["reason"] == "sold_out"
        assert refused.headers["content-type"].startswith("application/problem+json")
        # Refused by the gateway itself: inventory never saw it, so no rejected order was recorded.
        assert await stack.db.fetchval("SELECT count(*) FROM inventory.orders WHERE user_id = 'gate-second'") == 0

        assert (await first.post(f"/orders/{held.json()['order_id']}/cancel")).status_code == 200

        async def second_buyer_holds() -> bool:
            r = await second.post("/checkout", json=checkout_body(tt), headers={"Idempotency-Key": "gate-1"})
            assert r.status_code in (201, 409), r.text
            return r.status_code == 201

        await eventually(second_buyer_holds, timeout=10, interval=0.1, what="the gate to open once stock is back")
    assert await stack.stock(tt) == (1, 1, 0)
