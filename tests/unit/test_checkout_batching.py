"""Checkouts coalesced into one message per batch (shared/requests.py) and answered in one reply
(services/inventory/holds.py), without a broker: the batching, the per-caller answers and the failure paths."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from services.inventory.holds import HoldBatcher, Outcome
from shared import envelopes, topology
from shared.messages import (
    BatchedCheckout,
    CancelAnswered,
    CancelOrder,
    CancelOutcome,
    CheckoutBatch,
    CheckoutDecided,
    CheckoutOutcome,
    CheckoutRequested,
    CheckoutsDecided,
    OrderLine,
    OrderStatus,
    OrderView,
)
from shared.messaging import Delivery
from shared.requests import Coalescer, Requester
from shared.topology import Names
from tests.unit.fakes import FakeInventoryUnitOfWork


def checkout(user: str = "u") -> CheckoutRequested:
    return CheckoutRequested(
        order_id=uuid.uuid4(), user_id=user, items=[OrderLine(ticket_type_id=uuid.uuid4(), quantity=1)]
    )


def view(cmd: CheckoutRequested) -> OrderView:
    return OrderView(order_id=cmd.order_id, user_id=cmd.user_id, status=OrderStatus.PENDING, total=0, items=[])


# --- the coalescing -----------------------------------------------------------------------------


async def test_a_lone_item_goes_at_once_and_items_arriving_meanwhile_share_the_next_batch() -> None:
    sent: list[list[int]] = []
    release = asyncio.Event()

    async def send(batch: list[int]) -> None:
        sent.append(batch)
        if len(sent) == 1:
            await release.wait()  # the first publish is awaiting its confirm

    c: Coalescer[int] = Coalescer(send, max_batch=3)
    first = asyncio.create_task(c.submit(0))
    await asyncio.sleep(0)  # one loop turn: the first publish is under way
    await asyncio.sleep(0)
    assert sent == [[0]]
    rest = [asyncio.create_task(c.submit(i)) for i in range(1, 8)]
    await asyncio.sleep(0)
    assert sent == [[0]]  # nothing else goes while the first is in flight
    release.set()
    await asyncio.gather(first, *rest)
    assert sent == [[0], [1, 2, 3], [4, 5, 6], [7]]  # in order, capped at max_batch


async def test_a_refused_batch_raises_to_each_of_its_callers_and_the_next_batch_still_goes() -> None:
    sent: list[list[str]] = []
    gate = asyncio.Event()

    async def send(batch: list[str]) -> None:
        sent.append(batch)
        if batch[0] == "a":
            await gate.wait()
        if batch[0] == "b":
            raise ConnectionError("nack")

    c: Coalescer[str] = Coalescer(send, max_batch=2)
    a = asyncio.create_task(c.submit("a"))
    await asyncio.sleep(0)
    b, b2, d = (asyncio.create_task(c.submit(x)) for x in ("b", "b2", "d"))
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(a, b, b2, d, return_exceptions=True)
    assert results[0] is None and results[3] is None
    assert all(isinstance(r, ConnectionError) for r in results[1:3])
    assert sent == [["a"], ["b", "b2"], ["d"]]


async def test_a_cancelled_caller_does_not_break_its_batch() -> None:
    gate = asyncio.Event()
    sent: list[list[int]] = []

    async def send(batch: list[int]) -> None:
        sent.append(batch)
        await gate.wait()

    c: Coalescer[int] = Coalescer(send, max_batch=8)
    first = asyncio.create_task(c.submit(1))
    await asyncio.sleep(0)
    gone, stays = asyncio.create_task(c.submit(2)), asyncio.create_task(c.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    await asyncio.gather(first, stays)
    assert sent == [[1], [2, 3]]  # the cancelled caller's checkout is published anyway (durable, as a lone one)


# --- the envelope --------------------------------------------------------------------------------


def test_a_batch_is_routed_to_inventory_checkout_and_named_by_all_its_orders() -> None:
    a, b = checkout(), checkout()
    ab = CheckoutBatch(
        checkouts=[BatchedCheckout(request_id="1", checkout=a), BatchedCheckout(request_id="2", checkout=b)]
    )
    again = CheckoutBatch(
        checkouts=[BatchedCheckout(request_id="x", checkout=a), BatchedCheckout(request_id="y", checkout=b)]
    )
    a_only = CheckoutBatch(checkouts=[BatchedCheckout(request_id="1", checkout=a)])
    assert envelopes.routing_key(ab) == topology.CHECKOUT_BATCH
    assert topology.CHECKOUT_BATCH in topology.INVENTORY_CHECKOUT.bindings
    assert envelopes.message_id(ab) == envelopes.message_id(again)  # the same orders: the same id
    assert envelopes.message_id(ab) != envelopes.message_id(a_only)  # the same first order: not the same id
    assert envelopes.message_id(ab).startswith(f"checkouts:{a.order_id}+1:")


# --- the requester, on a fake bus ------------------------------------------------------------------


class FakeBus:
    def __init__(self, batch_max: int = 64) -> None:
        self.names = Names("t.")
        self.settings = SimpleNamespace(checkout_batch_max=batch_max)
        self.published: list[dict[str, Any]] = []
        self.refuse: Exception | None = None
        self.on_reply: Any = None
        self.confirm = asyncio.Event()
        self.confirm.set()
        self.any_published = asyncio.Event()

    def consume_replies(self, queue: str, on_reply: Any) -> None:
        self.on_reply = on_reply

    async def publish_raw(self, body: bytes, routing_key: str, **kw: Any) -> None:
        self.published.append({"body": body, "routing_key": routing_key, **kw})
        self.any_published.set()
        await self.confirm.wait()
        if self.refuse is not None:
            raise self.refuse

    def answer_batch(self, index: int, skip: int = 0) -> None:
        """Inventory's CheckoutsDecided for published batch ``index`` (leaving out its first ``skip`` items)."""
        batch = CheckoutBatch.model_validate_json(self.published[index]["body"])
        reply = CheckoutsDecided(
            decisions=[
                {
                    "request_id": item.request_id,
                    "decided": CheckoutDecided(outcome=CheckoutOutcome.HELD, order=view(item.checkout), created=True),
                }
                for item in batch.checkouts[skip:]
            ]
        )
        self.on_reply(
            SimpleNamespace(
                headers={"x-type": "CheckoutsDecided"}, correlation_id="whatever", body=reply.model_dump_json().encode()
            )
        )


async def test_concurrent_checkouts_become_two_messages_and_each_caller_gets_its_own_answer() -> None:
    bus = FakeBus()
    requester = Requester(bus)  # type: ignore[arg-type]
    bus.confirm.clear()
    cmds = [checkout(f"u{i}") for i in range(10)]
    calls = [asyncio.create_task(requester.request(c, CheckoutDecided, timeout=5)) for c in cmds]
    for _ in range(3):
        await asyncio.sleep(0)
    bus.confirm.set()

    await asyncio.wait_for(bus.any_published.wait(), 1)
    # Every caller queued in the same loop turn: one batch; it may be the only one.
    await asyncio.sleep(0)
    for i in range(len(bus.published)):
        assert bus.published[i]["routing_key"] == topology.CHECKOUT_BATCH
        assert bus.published[i]["mandatory"] is True
        assert bus.published[i]["reply_to"] == requester.reply_queue
        assert bus.published[i]["message_id"] == envelopes.message_id(
            CheckoutBatch.model_validate_json(bus.published[i]["body"])
        )
        bus.answer_batch(i)
    results = await asyncio.gather(*calls)
    assert len(bus.published) < len(cmds)
    assert [r.order.order_id if r else None for r in results] == [c.order_id for c in cmds]
    assert requester._waiting == {}


async def test_an_unanswered_item_times_out_alone_and_a_refused_batch_raises_to_all() -> None:
    bus = FakeBus()
    requester = Requester(bus)  # type: ignore[arg-type]
    bus.confirm.clear()
    calls = [asyncio.create_task(requester.request(checkout(), CheckoutDecided, timeout=0.3)) for _ in range(3)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    bus.confirm.set()
    await asyncio.wait_for(bus.any_published.wait(), 1)
    await asyncio.sleep(0)
    bus.answer_batch(0, skip=1)  # the first item's answer never comes
    results = await asyncio.gather(*calls)
    assert results[0] is None and all(isinstance(r, CheckoutDecided) for r in results[1:])

    bus.refuse = ConnectionError("returned: NO_ROUTE")
    refused = await asyncio.gather(
        *(requester.request(checkout(), CheckoutDecided, timeout=1) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in refused), refused
    assert requester._waiting == {}


async def test_other_commands_and_a_batch_max_of_one_keep_one_message_each() -> None:
    bus = FakeBus(batch_max=1)
    requester = Requester(bus)  # type: ignore[arg-type]
    cmd = checkout()
    task = asyncio.create_task(requester.request(cmd, CheckoutDecided, timeout=5))
    await asyncio.wait_for(bus.any_published.wait(), 1)
    assert bus.published[0]["routing_key"] == topology.CHECKOUT_REQUESTED
    assert bus.published[0]["message_id"] == f"checkout:{cmd.order_id}"
    decided = CheckoutDecided(outcome=CheckoutOutcome.HELD, order=view(cmd), created=True)
    bus.on_reply(
        SimpleNamespace(
            headers={"x-type": "CheckoutDecided"},
            correlation_id=bus.published[0]["correlation_id"],
            body=decided.model_dump_json().encode(),
        )
    )
    assert await task == decided

    bus = FakeBus()
    requester = Requester(bus)  # type: ignore[arg-type]
    cancel = CancelOrder(order_id=uuid.uuid4(), user_id="u")
    task2 = asyncio.create_task(requester.request(cancel, CancelAnswered, timeout=5))
    await asyncio.wait_for(bus.any_published.wait(), 1)
    assert bus.published[0]["routing_key"] == topology.CANCEL_ORDER
    bus.on_reply(
        SimpleNamespace(
            headers={},
            correlation_id=bus.published[0]["correlation_id"],
            body=CancelAnswered(outcome=CancelOutcome.NOT_FOUND).model_dump_json().encode(),
        )
    )
    assert (await task2) == CancelAnswered(outcome=CancelOutcome.NOT_FOUND)


# --- inventory's handler ---------------------------------------------------------------------------


class ReplyBus:
    def __init__(self) -> None:
        self.replies: list[Any] = []

    async def reply(self, delivery: Delivery, model: Any) -> None:
        self.replies.append(model)


def delivery() -> Delivery:
    return Delivery("m", "c", "t.gateway.replies.x", "batch-1", {}, topology.CHECKOUT_BATCH, False)


async def test_inventory_submits_every_item_at_once_and_answers_them_in_one_reply() -> None:
    bus = ReplyBus()
    batcher = HoldBatcher(FakeInventoryUnitOfWork(), bus, SimpleNamespace(hold_batch_max=256))  # type: ignore[arg-type]
    in_flight = 0
    most = 0

    async def submit(cmd: CheckoutRequested) -> Outcome:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return Outcome(view(cmd), True, cmd.request_hash)

    batcher.submit = submit  # type: ignore[method-assign]
    items = [BatchedCheckout(request_id=f"r{i}", correlation_id=f"c{i}", checkout=checkout()) for i in range(5)]
    await batcher.on_checkout_batch(CheckoutBatch(checkouts=items), delivery())
    assert most == 5  # all submitted concurrently (one group commit can take them all)
    (reply,) = bus.replies
    assert isinstance(reply, CheckoutsDecided)
    assert [d.request_id for d in reply.decisions] == [f"r{i}" for i in range(5)]
    assert all(d.decided.outcome is CheckoutOutcome.HELD for d in reply.decisions)


async def test_a_failed_item_answers_the_others_then_raises_for_the_retry_ladder() -> None:
    bus = ReplyBus()
    batcher = HoldBatcher(FakeInventoryUnitOfWork(), bus, SimpleNamespace(hold_batch_max=256))  # type: ignore[arg-type]
    bad = checkout("bad")

    async def submit(cmd: CheckoutRequested) -> Outcome:
        if cmd is bad:
            raise RuntimeError("database gone")
        return Outcome(view(cmd), True, cmd.request_hash)

    batcher.submit = submit  # type: ignore[method-assign]
    items = [
        BatchedCheckout(request_id="ok", checkout=checkout()),
        BatchedCheckout(request_id="bad", checkout=bad),
    ]
    with pytest.raises(RuntimeError, match="database gone"):
        await batcher.on_checkout_batch(CheckoutBatch(checkouts=items), delivery())
    (reply,) = bus.replies
    assert [d.request_id for d in reply.decisions] == ["ok"]
