"""The hold path: checkouts are decided in batches, one transaction per batch (group commit).

Every checkout handler submits its request and waits. While one batch's transaction runs, new requests
queue up; the next transaction takes all of them (up to ``hold_batch_max``). So a lone buyer pays no extra
delay, and under a flash sale one lock of the hot ticket-type row and one commit serve many buyers, which
lifts the ceiling of a single row's lock rate (see docs/decisions.md).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.inventory import domain, store
from services.inventory.domain import CheckoutRequest, Held, Rejected
from shared import logs, metrics, outbox, topology
from shared.batching import GroupCommit
from shared.messages import (
    CheckoutRequested,
    HoldExpiryDue,
    OrderHeld,
    OrderStatus,
    OrderView,
    StockChanged,
)
from shared.messaging import Bus
from shared.outbox import Outgoing
from shared.settings import Settings

log = logs.get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    order: OrderView
    created: bool  # False: the order existed already (a redelivery or a repeated Idempotency-Key)
    request_hash: str  # of the request that created the order


class HoldBatcher:
    def __init__(self, engine: AsyncEngine, bus: Bus, relay: outbox.OutboxRelay, settings: Settings) -> None:
        self.engine = engine
        self.bus = bus
        self.relay = relay
        self.settings = settings
        self._group = GroupCommit("hold-batcher", self._decide_batch, settings.hold_batch_max)
        self._lock_stock = (
            store.lock_stock_by_items if settings.hold_method == "order_items" else store.lock_stock
        )

    def start(self) -> None:
        self._group.start()

    async def stop(self) -> None:
        await self._group.stop()

    async def submit(self, cmd: CheckoutRequested) -> Outcome:
        return await self._group.submit(cmd)

    async def _decide_batch(self, cmds: Sequence[CheckoutRequested], correlation_ids: Sequence[str]) -> list[Outcome]:
        results = await self.decide(cmds, correlation_ids)
        return [results[c.order_id] for c in cmds]

    async def decide(
        self, batch: Sequence[CheckoutRequested], correlation_ids: Sequence[str]
    ) -> dict[uuid.UUID, Outcome]:
        # Redelivered or repeated order ids (Idempotency-Key) are answered from what was decided before.
        firsts: dict[uuid.UUID, CheckoutRequested] = {}
        correlation: dict[uuid.UUID, str] = {}
        for cmd, cid in zip(batch, correlation_ids, strict=True):
            firsts.setdefault(cmd.order_id, cmd)
            correlation.setdefault(cmd.order_id, cid)
        tt_ids = {line.ticket_type_id for cmd in firsts.values() for line in cmd.items}
        results: dict[uuid.UUID, Outcome] = {}
        async with self.engine.begin() as conn:
            existing = await store.existing_orders(conn, firsts)
            fresh = [cmd for oid, cmd in firsts.items() if oid not in existing]
            results.update({oid: Outcome(view, False, h) for oid, (view, h) in existing.items()})
            if fresh:
                now = await store.now(conn)
                stock = await self._lock_stock(conn, tt_ids)
                holdings = await store.load_holdings(
                    conn, [(c.user_id, line.ticket_type_id) for c in fresh for line in c.items]
                )
                requests = [CheckoutRequest(c.order_id, c.user_id, tuple(c.items)) for c in fresh]
                decisions = domain.decide(requests, stock, holdings, now, self.settings.max_quantity_per_order)
                new_orders = [
                    store.NewOrder(c.order_id, c.user_id, c.user_email, c.locale, c.request_hash) for c in fresh
                ]
                await store.insert_decisions(conn, new_orders, decisions, now)
                held = [d for d in decisions if isinstance(d, Held)]
                holding_deltas: dict[tuple[str, uuid.UUID], int] = defaultdict(int)
                by_order = {c.order_id: c for c in fresh}
                for d in held:
                    for line in d.lines:
                        holding_deltas[(by_order[d.order_id].user_id, line.ticket_type_id)] += line.quantity
                await store.add_holdings(conn, dict(holding_deltas))
                changes = await store.apply_stock_deltas(conn, domain.held_deltas(decisions))
                views = {d.order_id: _view(by_order[d.order_id], d, now) for d in decisions}
                await outbox.add(conn, "inventory", await self._messages(held, views, by_order, changes, correlation))
                results.update(
                    {oid: Outcome(view, True, by_order[oid].request_hash) for oid, view in views.items()}
                )
                _count(decisions)
        if fresh:
            self.relay.wake()
        metrics.HOLD_BATCH_SIZE.observe(len(batch))
        return results

    async def _messages(
        self,
        held: list[Held],
        views: dict[uuid.UUID, OrderView],
        by_order: dict[uuid.UUID, CheckoutRequested],
        changes: list[StockChanged],
        correlation: dict[uuid.UUID, str],
    ) -> list[Outgoing]:
        out: list[Outgoing] = []
        for d in held:
            view, cmd = views[d.order_id], by_order[d.order_id]
            assert view.expires_at is not None
            delay_queue = await self.bus.ensure_hold_delay_queue(d.hold_seconds)
            out.append(Outgoing.to_queue(
                delay_queue, HoldExpiryDue(order_id=d.order_id, expires_at=view.expires_at),
                f"expiry:{d.order_id}", correlation[d.order_id],
            ))
            out.append(Outgoing.event(
                topology.ORDER_HELD,
                OrderHeld(
                    order_id=d.order_id, user_id=cmd.user_id, user_email=cmd.user_email, locale=cmd.locale,
                    event_id=d.event_id, items=list(d.lines), total=d.total, expires_at=view.expires_at,
                ),
                f"held:{d.order_id}", correlation[d.order_id],
            ))
        out.extend(
            Outgoing.event(topology.STOCK_CHANGED, c, f"stock:{c.ticket_type_id}:{uuid.uuid4().hex}")
            for c in changes
        )
        return out


def _view(cmd: CheckoutRequested, decision: Held | Rejected, now: datetime) -> OrderView:
    if isinstance(decision, Held):
        return OrderView(
            order_id=cmd.order_id, user_id=cmd.user_id, status=OrderStatus.PENDING, total=decision.total,
            items=list(decision.lines), expires_at=store.expiry_at(now, decision.hold_seconds),
            created_at=now,
        )
    return OrderView(
        order_id=cmd.order_id, user_id=cmd.user_id, status=OrderStatus.REJECTED, total=0, items=[],
        reason=decision.reason.value, detail=decision.detail, created_at=now,
    )


def _count(decisions: list[Held | Rejected]) -> None:
    for d in decisions:
        if isinstance(d, Held):
            metrics.HOLDS_PLACED.inc()
        else:
            metrics.HOLDS_REJECTED.labels(reason=d.reason.value).inc()
