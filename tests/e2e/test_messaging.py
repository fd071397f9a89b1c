"""Messaging guarantees of the checkout pipeline: idempotent redelivery, dead-lettering of bad messages, and
no lost message when a service dies between its commit and its publish (the outbox)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import aio_pika
from aio_pika.abc import AbstractQueue

from shared import envelopes, topology
from shared.messages import BatchedCheckout, CheckoutBatch, CheckoutRequested, HoldExpiryDue, OrderHeld, OrderLine
from tests.harness import Stack, eventually, metric


async def publish(stack: Stack, routing_key: str, body: bytes, message_id: str) -> None:
    channel = await stack.amqp.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(stack.names.events_exchange)
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
            ),
            routing_key,
        )
    finally:
        await channel.close()


@contextlib.asynccontextmanager
async def watching(stack: Stack, routing_key: str) -> AsyncIterator[AbstractQueue]:
    """A queue of this test's own, bound to ``routing_key`` on the events exchange, for as long as the block."""
    channel = await stack.amqp.channel()
    try:
        queue = await channel.declare_queue(
            stack.names.queue(f"test.watch.{uuid.uuid4().hex[:8]}"), exclusive=True, auto_delete=True
        )
        await queue.bind(stack.names.events_exchange, routing_key)
        yield queue
    finally:
        await channel.close()


def checkout_command(ticket_type_id: str, user: str, quantity: int = 1) -> CheckoutRequested:
    return CheckoutRequested(
        order_id=uuid.uuid4(),
        user_id=user,
        user_email=f"{user}@example.com",
        items=[OrderLine(ticket_type_id=uuid.UUID(ticket_type_id), quantity=quantity)],
    )


async def test_redelivered_checkout_holds_once(stack: Stack) -> None:
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    cmd = checkout_command(tt, "redelivered", 3)
    body = cmd.model_dump_json().encode()
    for _ in range(3):
        await publish(stack, topology.CHECKOUT_REQUESTED, body, envelopes.message_id(cmd))

    async def pending() -> bool:
        return await stack.order_status(str(cmd.order_id)) == "PENDING"

    await eventually(pending, what="the order to be held")
    # Let the inventory drain the duplicates: the queue is empty and the hold is still counted once.
    await eventually(lambda: _empty(stack, topology.INVENTORY_CHECKOUT.name), what="checkout queue drained")
    assert await stack.stock(tt) == (10, 3, 0)
    assert await stack.db.fetchval("SELECT count(*) FROM inventory.orders WHERE id = $1", cmd.order_id) == 1


async def test_a_batch_delivered_again_holds_each_order_once_and_a_bad_batch_is_dead_lettered_whole(
    stack: Stack,
) -> None:
    """A gateway's ``checkout.batch`` redelivered (or replayed from the dead letters) decides nothing twice:
    each order id is answered from what was committed for it. A batch that does not parse goes to the
    dead-letter queue as one message, with its reason."""
    event = await stack.create_event(capacity=10)
    tt = event["ticket_types"][0]["ticket_type_id"]
    cmds = [checkout_command(tt, f"batched-{i}", 2) for i in range(3)]
    batch = CheckoutBatch(checkouts=[BatchedCheckout(request_id=f"r{i}", checkout=c) for i, c in enumerate(cmds)])
    body = batch.model_dump_json().encode()
    for _ in range(3):
        await publish(stack, topology.CHECKOUT_BATCH, body, envelopes.message_id(batch))

    async def all_pending() -> bool:
        return all([await stack.order_status(str(c.order_id)) == "PENDING" for c in cmds])

    await eventually(all_pending, what="the batch's orders to be held")
    await eventually(lambda: _empty(stack, topology.INVENTORY_CHECKOUT.name), what="checkout queue drained")
    assert await stack.stock(tt) == (10, 6, 0)
    ids = [c.order_id for c in cmds]
    assert await stack.db.fetchval("SELECT count(*) FROM inventory.orders WHERE id = ANY($1::uuid[])", ids) == 3

    bad = batch.model_dump(mode="json")
    bad["checkouts"][1]["checkout"]["items"][0]["quantity"] = -1  # one bad item: the whole message is invalid
    marker = uuid.uuid4().hex
    await publish(stack, topology.CHECKOUT_BATCH, json.dumps(bad).encode(), f"bad-batch-{marker}")

    async def dead_lettered() -> dict[str, object] | None:
        row = await stack.db.fetchrow(
            "SELECT headers FROM ops.dead_letters WHERE service = 'inventory' AND message_id = $1",
            f"bad-batch-{marker}",
        )
        return json.loads(row["headers"]) if row is not None else None

    headers = await eventually(dead_lettered, what="the bad batch in the dead letters")
    assert headers is not None
    assert headers["x-exception-type"] == "ValidationError"
    assert headers["x-original-routing-key"] == topology.CHECKOUT_BATCH
    assert await stack.stock(tt) == (10, 6, 0)


async def _empty(stack: Stack, queue: str) -> bool:
    return await stack.queue_depth(stack.names.queue(queue)) == 0


async def test_redelivered_expiry_releases_once(stack: Stack) -> None:
    event = await stack.create_event(capacity=4, hold_seconds=1)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with stack.client("expiring") as c:
        first = (await c.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 2}]})).json()
        second = (await c.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]})).json()

    async def first_expired() -> bool:
        return await stack.order_status(first["order_id"]) == "EXPIRED"

    await eventually(first_expired, what="first order EXPIRED")
    await eventually(lambda: _second_expired(stack, second["order_id"]), what="second order EXPIRED")
    assert await stack.stock(tt) == (4, 0, 0)
    # The same expiry message again (a redelivery, or the sweeper and the delay queue both firing).
    again = HoldExpiryDue(order_id=uuid.UUID(first["order_id"]), expires_at=first["expires_at"])
    for _ in range(3):
        await publish(stack, topology.HOLD_EXPIRY_DUE, again.model_dump_json().encode(), envelopes.message_id(again))
    await eventually(lambda: _empty(stack, topology.INVENTORY_HOLD_EXPIRY.name), what="expiry queue drained")
    assert await stack.stock(tt) == (4, 0, 0)
    held = await stack.db.fetchval(
        "SELECT quantity FROM inventory.user_holdings WHERE user_id = 'expiring' AND ticket_type_id = $1", uuid.UUID(tt)
    )
    assert held == 0, "the buyer's per-user count must be released exactly once"


async def _second_expired(stack: Stack, order_id: str) -> bool:
    return await stack.order_status(order_id) == "EXPIRED"


async def test_malformed_messages_are_dead_lettered_with_reason_and_the_queue_keeps_flowing(stack: Stack) -> None:
    event = await stack.create_event(capacity=5)
    tt = event["ticket_types"][0]["ticket_type_id"]
    marker = uuid.uuid4().hex
    await publish(stack, topology.CHECKOUT_REQUESTED, b"{not json", f"garbage-{marker}")
    await publish(
        stack, topology.CHECKOUT_REQUESTED, json.dumps({"order_id": "x", "items": []}).encode(), f"wrong-shape-{marker}"
    )
    bad_quantity = checkout_command(tt, "hostile").model_dump(mode="json")
    bad_quantity["items"][0]["quantity"] = -5
    await publish(stack, topology.CHECKOUT_REQUESTED, json.dumps(bad_quantity).encode(), f"negative-{marker}")

    # The ops keeper moves every DLQ message into ops.dead_letters (headers kept as JSON): read them there.
    async def collected() -> list[dict[str, object]] | None:
        rows = await stack.db.fetch(
            "SELECT headers FROM ops.dead_letters WHERE service = 'inventory' AND message_id LIKE '%' || $1", marker
        )
        return [json.loads(r["headers"]) for r in rows] if len(rows) == 3 else None

    dead = await eventually(collected, what="three dead letters")
    assert dead is not None
    for headers in dead:
        assert str(headers["x-reason"]).startswith("invalid message"), headers
        assert headers["x-exception-type"] == "ValidationError"
        assert headers["x-original-queue"] == stack.names.queue(topology.INVENTORY_CHECKOUT.name)
        assert headers["x-original-routing-key"] == topology.CHECKOUT_REQUESTED
    assert await stack.stock(tt) == (5, 0, 0), "nothing from a bad message may be held"
    async with stack.client("after-the-garbage") as c:
        r = await c.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]})
    assert r.status_code == 201, "the queue must keep flowing after bad messages"


async def test_service_killed_between_commit_and_publish_loses_no_message(stack: Stack) -> None:
    event = await stack.create_event(capacity=5)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with watching(stack, topology.ORDERS_HELD) as watch:
        stack.supervisor.stop_service("inventory")
        env = {**stack.env, "TICKETING_FAULT_EXIT_BEFORE_PUBLISH": "true", "TICKETING_INVENTORY_PORT": "0"}
        faulty = subprocess.Popen([sys.executable, "-m", "services.inventory"], env=env)  # noqa: ASYNC220
        try:
            cmd = checkout_command(tt, "crash-victim", 2)
            await publish(stack, topology.CHECKOUT_REQUESTED, cmd.model_dump_json().encode(), envelopes.message_id(cmd))

            async def died() -> int | None:
                return faulty.poll()

            assert await eventually(died, timeout=30, what="the faulty inventory to exit") == 70
        finally:
            if faulty.poll() is None:
                faulty.kill()
        # The hold is committed and its messages wait in the outbox; nothing was published.
        assert await stack.order_status(str(cmd.order_id)) == "PENDING"
        assert await stack.db.fetchval("SELECT count(*) FROM inventory.outbox") >= 2
        assert await stack.queue_depth(watch.name) == 0

        stack.supervisor.start_service("inventory")
        await stack.wait_ready()
        received: list[dict[str, object]] = []

        async def held_event_arrived() -> bool:
            msg = await watch.get(no_ack=True, fail=False)
            if msg is not None:
                received.extend(json.loads(msg.body)["orders"])  # one orders.held per hold batch
            return any(m["order_id"] == str(cmd.order_id) for m in received)

        await eventually(held_event_arrived, timeout=30, what="order.held after the restart")

        async def outbox_empty() -> bool:
            return await stack.db.fetchval("SELECT count(*) FROM inventory.outbox") == 0

        await eventually(outbox_empty, what="the outbox to drain")
        assert await stack.queue_depth(stack.names.hold_delay_queue(900)) >= 1, "the hold's release is scheduled"


async def test_a_hold_batch_is_one_message_and_every_order_gets_exactly_one_payment_attempt(stack: Stack) -> None:
    """orders.held carries every order of a group-commit batch; the payment service registers attempt 1 for
    each, once, however often the message (or an older inventory's per-order order.held) is delivered."""
    event = await stack.create_event(capacity=40)
    tt = event["ticket_types"][0]["ticket_type_id"]
    async with watching(stack, topology.ORDERS_HELD) as watch:

        async def buy(i: int) -> str:
            async with stack.client(f"batch-buyer-{i}") as c:
                r = await c.post("/checkout", json={"items": [{"ticket_type_id": tt, "quantity": 1}]})
            assert r.status_code == 201, r.text
            return str(r.json()["order_id"])

        ordered = set(await asyncio.gather(*(buy(i) for i in range(20))))
        published: list[tuple[str, bytes]] = []
        seen: list[str] = []

        async def all_announced() -> bool:
            while (msg := await watch.get(no_ack=True, fail=False)) is not None:
                published.append((msg.message_id or "", msg.body))
                seen.extend(o["order_id"] for o in json.loads(msg.body)["orders"])
            return ordered <= set(seen)

        await eventually(all_announced, timeout=30, what="every order in an orders.held")
        assert len(seen) == len(set(seen)) == 20 and len(published) <= 20, "each order in exactly one batch message"

        async def attempts() -> list[tuple[str, int]]:
            rows = await stack.db.fetch(
                "SELECT order_id::text AS o, attempt FROM payment.attempts WHERE order_id::text = ANY($1::text[])",
                list(ordered),
            )
            return sorted((r["o"], r["attempt"]) for r in rows)

        async def one_each() -> bool:
            return await attempts() == sorted((o, 1) for o in ordered)

        await eventually(one_each, timeout=30, what="one payment attempt per held order")
        # Redelivery: every batch message twice more, and one order as an older inventory would have sent it.
        payment_metrics = f"http://127.0.0.1:{stack.settings.payment_port}/metrics"
        handled = f'ticketing_handler_seconds_count{{queue="{topology.PAYMENT_ORDERS.name}"}}'
        before = await metric(payment_metrics, handled)
        for message_id, body in published * 2:
            await publish(stack, topology.ORDERS_HELD, body, message_id)
        legacy = json.loads(published[0][1])["orders"][0]
        older = OrderHeld.model_validate(legacy)
        await publish(stack, topology.ORDER_HELD, older.model_dump_json().encode(), envelopes.message_id(older))

        async def all_handled() -> bool:  # each redelivered message went through the payment service's handler
            return await metric(payment_metrics, handled) >= before + 2 * len(published) + 1

        await eventually(all_handled, timeout=30, what="every redelivered message handled")
        assert await one_each(), "a redelivered batch registers nothing twice"
