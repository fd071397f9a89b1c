"""The hold path: checkouts are decided in batches, one transaction per batch (group commit).

Every checkout handler submits its request and waits. While one batch's transaction runs, new requests
queue up; the next transaction takes all of them (up to ``hold_batch_max``). So a lone buyer pays no extra
delay, and under a flash sale one lock of the hot ticket-type row and one commit serve many buyers, which
lifts the ceiling of a single row's lock rate (see docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from services.inventory import domain
from services.inventory.domain import CheckoutRequest, Held, Order, StockEffect
from services.inventory.uow import AbstractInventoryUnitOfWork
from shared import logs, metrics
from shared.batching import GroupCommit
from shared.messages import (
    MAX_TICKETS_PER_ORDER,
    BatchedCheckout,
    CheckoutBatch,
    CheckoutDecided,
    CheckoutItemDecided,
    CheckoutOutcome,
    CheckoutRequested,
    CheckoutsDecided,
    OrderStatus,
    OrderView,
)
from shared.messaging import Bus, Delivery
from shared.settings import Settings

log = logs.get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    order: OrderView
    created: bool  # False: the order existed already (a redelivery or a repeated Idempotency-Key)
    request_hash: str  # of the request that created the order
    # Ticket types the deciding batch left with nothing available, and the stock version it left them at.
    sold_out: Mapping[uuid.UUID, int] = field(default_factory=dict)


class HoldBatcher:
    def __init__(self, new_uow: Callable[[], AbstractInventoryUnitOfWork], bus: Bus, settings: Settings) -> None:
        self.new_uow = new_uow
        self.bus = bus
        self.settings = settings
        self._group = GroupCommit("hold-batcher", self._decide_batch, settings.hold_batch_max)

    def start(self) -> None:
        self._group.start()

    async def stop(self) -> None:
        await self._group.stop()

    async def submit(self, cmd: CheckoutRequested) -> Outcome:
        return await self._group.submit(cmd)

    async def on_checkout_requested(self, cmd: CheckoutRequested, delivery: Delivery) -> None:
        """Wait for the batch that decides this checkout, then answer the caller."""
        await self.bus.reply(delivery, checkout_decided(cmd, await self.submit(cmd)))

    async def on_checkout_batch(self, batch: CheckoutBatch, delivery: Delivery) -> None:
        """Every checkout of a gateway's batch goes into the group commit at once (with its own correlation
        id); once all are decided and committed, one ``CheckoutsDecided`` answers them all.

        Returning is what acknowledges the message, so it is acknowledged only when every item is committed. If
        an item failed, the decided ones are answered, then the failure is raised: the whole batch goes to the
        retry ladder and after it to the dead-letter queue, and a retry or a replay decides nothing twice (each
        order id is answered from what was committed for it: ``decide``)."""
        results = await asyncio.gather(*(self._submit_item(item) for item in batch.checkouts), return_exceptions=True)
        decided = [
            CheckoutItemDecided(request_id=item.request_id, decided=checkout_decided(item.checkout, result))
            for item, result in zip(batch.checkouts, results, strict=True)
            if isinstance(result, Outcome)
        ]
        failures = [r for r in results if isinstance(r, BaseException)]
        if decided:
            await self.bus.reply(delivery, CheckoutsDecided(decisions=decided))
        if failures:
            log.warning("checkout_batch_failed", size=len(results), failed=len(failures), error=repr(failures[0]))
            raise failures[0]

    async def _submit_item(self, item: BatchedCheckout) -> Outcome:
        # A task of its own (gather): the correlation id set here is this item's alone; the group commit reads
        # it for the item's events. Only the context variable: nothing logs in this task, and binding it into
        # structlog's context for each item cost 13 % of inventory's CPU at 64 checkouts in flight (profile).
        if item.correlation_id:
            logs.correlation_id.set(item.correlation_id)
        return await self.submit(item.checkout)

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
        results: dict[uuid.UUID, Outcome] = {}
        async with self.new_uow() as uow:
            existing = await uow.orders.existing(firsts)
            results.update({oid: Outcome(view, False, h) for oid, (view, h) in existing.items()})
            fresh = [cmd for oid, cmd in firsts.items() if oid not in existing]
            if fresh:
                orders, sold_out = await self._decide_fresh(uow, fresh)
                for order_id, event in domain.batch_events(orders):
                    uow.emit([event], correlation[order_id])
                # The holds' releases are scheduled with them: one delay message per hold duration.
                for hold_seconds, due in domain.expiries_due(orders):
                    delay_queue = await self.bus.ensure_hold_delay_queue(hold_seconds)
                    uow.send(delay_queue, due, correlation[due.all_order_ids[0]])
                results.update({o.id: Outcome(o.view(), True, firsts[o.id].request_hash, sold_out) for o in orders})
                await uow.commit()
                _count(orders)
        metrics.HOLD_BATCH_SIZE.observe(len(batch))
        return results

    async def _decide_fresh(
        self, uow: AbstractInventoryUnitOfWork, fresh: list[CheckoutRequested]
    ) -> tuple[list[Order], dict[uuid.UUID, int]]:
        """One lock of the batch's ticket types; every request held in full or rejected, in arrival order.
        Also returns the ticket types the batch left with nothing available, with their stock versions."""
        now = await uow.now()
        stock = await uow.stock.lock({line.ticket_type_id for c in fresh for line in c.items})
        holdings = await uow.stock.holdings((c.user_id, line.ticket_type_id) for c in fresh for line in c.items)
        requests = [CheckoutRequest(c.order_id, c.user_id, tuple(c.items)) for c in fresh]
        decisions = domain.decide(requests, stock, holdings, now, MAX_TICKETS_PER_ORDER)
        orders: list[Order] = []
        effect = StockEffect()
        for cmd, decision in zip(fresh, decisions, strict=True):
            order = Order(
                id=cmd.order_id,
                user_id=cmd.user_id,
                user_email=cmd.user_email,
                locale=cmd.locale,
                status=OrderStatus.REQUESTED,
            )
            if isinstance(decision, Held):
                order.hold(decision, now)
                effect.add(
                    StockEffect(
                        held={line.ticket_type_id: line.quantity for line in decision.lines},
                        holdings={(cmd.user_id, line.ticket_type_id): line.quantity for line in decision.lines},
                    )
                )
            else:
                order.reject(decision, now)
            orders.append(order)
        await uow.orders.add(orders, [c.request_hash for c in fresh])
        # The batch's stock was locked above: the counters move once per ticket type for the whole batch.
        changes = await uow.stock.apply(effect, locked=True)
        uow.emit(changes)
        versions = {tt: level.stock_version for tt, level in stock.items()}
        versions.update((c.ticket_type_id, c.stock_version) for c in changes)
        return orders, {tt: versions[tt] for tt, level in sorted(stock.items()) if level.available <= 0}


def checkout_decided(cmd: CheckoutRequested, outcome: Outcome) -> CheckoutDecided:
    view = outcome.order
    if not outcome.created and outcome.request_hash != cmd.request_hash:
        kind = CheckoutOutcome.KEY_REUSED
    elif view.status is OrderStatus.REJECTED:
        kind = CheckoutOutcome.REJECTED
    else:
        kind = CheckoutOutcome.HELD
    return CheckoutDecided(
        outcome=kind,
        order=view,
        created=outcome.created,
        sold_out_versions=dict(outcome.sold_out),
    )


def _count(orders: list[Order]) -> None:
    for o in orders:
        if o.reason is None:
            metrics.HOLDS_PLACED.inc()
        else:
            metrics.HOLDS_REJECTED.labels(reason=o.reason.value).inc()
