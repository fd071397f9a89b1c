"""Checkouts coalesced by the gateway (``checkout.batch``, shared/requests.py) through the real stack: fewer
messages to inventory than checkouts, and every caller still gets its own, exact decision."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import aiohttp

from tests.harness import Stack, eventually, metric


def checkout_body(ticket_type_id: str, quantity: int = 1) -> dict[str, object]:
    return {"items": [{"ticket_type_id": ticket_type_id, "quantity": quantity}]}


async def test_concurrent_checkouts_travel_in_batches_and_are_decided_exactly(stack: Stack) -> None:
    """200 checkouts at 64 at once through the real gateway: the gateway coalesces them (``checkout.batch``),
    so inventory consumes fewer messages than it decides checkouts, and every caller gets its own answer:
    exactly the capacity held, no buyer over the limit."""
    capacity, per_user_limit, buyers, attempts_each = 120, 3, 50, 4
    event = await stack.create_event(capacity=capacity, per_user_limit=per_user_limit)
    tt = event["ticket_types"][0]["ticket_type_id"]
    names = [f"batched-{i}" for i in range(buyers)]
    tokens = {b: stack.token(b) for b in names}
    attempts = [b for b in names for _ in range(attempts_each)]
    random.Random(11).shuffle(attempts)
    inventory_metrics = f"http://127.0.0.1:{stack.settings.inventory_port}/metrics"
    messages = 'ticketing_handler_seconds_count{queue="inventory.checkout"}'
    decided = "ticketing_hold_batch_size_sum"
    messages_before = await metric(inventory_metrics, messages)
    decided_before = await metric(inventory_metrics, decided)
    in_flight = asyncio.Semaphore(64)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        stack.base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as client:

        async def attempt(buyer: str) -> tuple[str, int, dict[str, object]]:
            async with (
                in_flight,
                client.post(
                    "/checkout", json=checkout_body(tt), headers={"Authorization": f"Bearer {tokens[buyer]}"}
                ) as r,
            ):
                return buyer, r.status, await r.json(content_type=None)

        responses = await asyncio.gather(*(attempt(b) for b in attempts))

    codes = Counter(status for _, status, _ in responses)
    assert not [r for r in responses if r[1] >= 500], codes
    assert codes[201] + codes[202] + codes[409] + codes[422] == len(attempts), codes
    # Each caller got its own order back, never another caller's: distinct orders, each of its buyer.
    answered = {uuid.UUID(str(body["order_id"])): buyer for buyer, status, body in responses if status == 201}
    assert len(answered) == codes[201]
    owners = await stack.db.fetch(
        "SELECT id, user_id, status FROM inventory.orders WHERE id = ANY($1::uuid[])", list(answered)
    )
    assert {r["id"]: r["user_id"] for r in owners} == answered
    assert {r["status"] for r in owners} <= {"PENDING"}

    async def all_decided() -> bool:  # a 202 (answer later than the wait) is decided all the same
        return bool(await metric(inventory_metrics, decided) - decided_before >= codes[201] + codes[202])

    await eventually(all_decided, what="every accepted checkout decided")
    assert await stack.stock(tt) == (capacity, capacity, 0)
    held = await stack.db.fetch(
        "SELECT o.user_id, SUM(i.quantity) AS n FROM inventory.order_items i "
        "JOIN inventory.orders o ON o.id = i.order_id "
        "WHERE i.ticket_type_id = $1 AND o.status = 'PENDING' GROUP BY o.user_id",
        uuid.UUID(tt),
    )
    assert sum(r["n"] for r in held) == capacity
    assert max(r["n"] for r in held) <= per_user_limit
    if not codes[202]:
        assert codes[201] == capacity, codes
    assert {body["reason"] for _, status, body in responses if status in (409, 422)} <= {"sold_out", "limit_exceeded"}
    sent = await metric(inventory_metrics, messages) - messages_before
    decisions = await metric(inventory_metrics, decided) - decided_before
    assert 0 < sent < decisions, (sent, decisions)
