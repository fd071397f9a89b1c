"""The organiser's actions on inventory: refund a paid order, cancel an event.

* ``refund_order``: PAID -> REFUND_PENDING (``Order.refund``) in one unit of work: the tickets are void, their
  stock is back on sale at once (sold -= q, the buyer's holdings reduced) and ``order.refund_pending`` goes to the
  payment service, which asks the provider (the late-payment refund path); ``payment.refunded`` then moves the
  order to REFUNDED (``sales.payment_refunded``) and the buyer is emailed.
* ``cancel_event``: ON_SALE -> CANCELLING in one short unit of work (from then on every hold decision refuses
  the event), with ``catalog.event_cancelled`` (search drops it) and the first ``ContinueEventCancellation``.
* ``continue_event_cancellation``: one batch (``batch_size`` orders, one transaction with its outbox rows): the
  event's next PENDING orders are cancelled and PAID ones refunded, the progress counters move, and the next
  batch's message is written to the outbox in the same transaction. No giant transaction, and a crash loses
  nothing: either the batch committed with its successor's message, or its own message is redelivered. A
  message whose batch is not the next one is a stale copy and changes nothing; ``resume`` re-sends the next
  batch's message at start-up and for a cancellation idle too long (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from services.inventory.domain import ORGANISER_REFUND_REASON, Event, cancellation_progress
from services.inventory.uow import AbstractInventoryUnitOfWork
from shared import logs
from shared.messages import (
    CancelEvent,
    CancellationProgress,
    ContinueEventCancellation,
    EventCancelAnswered,
    EventCancelled,
    EventCancelOutcome,
    EventStatus,
    OrderStatus,
    RefundAnswered,
    RefundCause,
    RefundOrder,
    RefundOutcome,
)

log = logs.get_logger(__name__)

BATCH_SIZE = 200  # orders per unit of work (TICKETING_EVENT_CANCEL_BATCH_SIZE)
TO_CANCEL = (OrderStatus.PENDING, OrderStatus.PAID)


async def refund_order(cmd: RefundOrder, uow: AbstractInventoryUnitOfWork) -> RefundAnswered:
    async with uow:
        order = await uow.orders.lock(cmd.order_id)
        if order is None:
            return RefundAnswered(outcome=RefundOutcome.NOT_FOUND)
        if order.status in (OrderStatus.REFUND_PENDING, OrderStatus.REFUNDED):
            return RefundAnswered(outcome=RefundOutcome.ALREADY, order=order.view())
        if order.status is not OrderStatus.PAID:
            return RefundAnswered(outcome=RefundOutcome.NOT_PAID, order=order.view())
        effect = order.refund(ORGANISER_REFUND_REASON, RefundCause.ORGANISER)
        await uow.orders.save([order])
        uow.emit(await uow.stock.apply(effect))
        await uow.sales.refund_requested([order.id], RefundCause.ORGANISER, cmd.actor)
        uow.emit(order.events)
        await uow.commit()
    log.info("order_refund_requested", order_id=str(order.id), actor=cmd.actor)
    return RefundAnswered(outcome=RefundOutcome.ACCEPTED, order=order.view())


async def cancel_event(cmd: CancelEvent, uow: AbstractInventoryUnitOfWork) -> EventCancelAnswered:
    async with uow:
        event = await uow.events.lock(cmd.event_id)
        if event is None:
            return EventCancelAnswered(outcome=EventCancelOutcome.NOT_FOUND)
        if event.status is not EventStatus.ON_SALE:
            return EventCancelAnswered(outcome=EventCancelOutcome.ALREADY, progress=await _progress(uow, event))
        event.begin_cancel(cmd.actor)
        # Lock the event's ticket types: a hold batch that read the event as on sale commits before this does,
        # so its orders are visible to the batches that follow (docs/decisions.md).
        await uow.stock.lock(await uow.events.ticket_type_ids(event.id))
        await uow.events.save(event)
        uow.emit([EventCancelled(event_id=event.id, cancelled_at=await uow.now())])
        uow.emit([ContinueEventCancellation(event_id=event.id, batch=event.next_batch)])
        progress = await _progress(uow, event)
        await uow.commit()
    log.info("event_cancel_started", event_id=str(event.id), actor=cmd.actor)
    return EventCancelAnswered(outcome=EventCancelOutcome.ACCEPTED, progress=progress)


async def continue_event_cancellation(
    msg: ContinueEventCancellation, uow: AbstractInventoryUnitOfWork, batch_size: int = BATCH_SIZE, pause: float = 0.0
) -> None:
    if pause > 0:  # pacing: a big cancellation leaves the database to the other events' sales in between
        await asyncio.sleep(pause)
    async with uow:
        event = await uow.events.lock(msg.event_id)
        if event is None or not event.is_next(msg.batch):
            return  # a stale copy (that batch is done) or a cancellation that is finished
        orders = await uow.orders.lock_for_event(event.id, TO_CANCEL, batch_size)
        effect = event.cancel_batch(orders)
        await uow.orders.save(orders)
        uow.emit(await uow.stock.apply(effect))
        refunding = [o.id for o in orders if o.status is OrderStatus.REFUND_PENDING]
        await uow.sales.refund_requested(refunding, RefundCause.EVENT_CANCELLED, event.cancelled_by)
        for order in orders:
            uow.emit(order.events)
        if len(orders) < batch_size and not await _left(uow, event.id):
            event.finish()
        else:
            uow.emit([ContinueEventCancellation(event_id=event.id, batch=event.next_batch)])
        await uow.events.save(event)
        await uow.commit()
    log.info(
        "event_cancel_batch",
        event_id=str(event.id),
        batch=msg.batch,
        orders=len(orders),
        status=event.status.value,
    )


async def _left(uow: AbstractInventoryUnitOfWork, event_id: UUID) -> int:
    """Orders still to cancel or refund, counted under the event's ticket-type locks: a hold that raced the
    start of the cancellation has committed by now, so it is counted (and done by a further batch)."""
    await uow.stock.lock(await uow.events.ticket_type_ids(event_id))
    counts = await uow.orders.count_for_event(event_id)
    return sum(counts.get(s, 0) for s in TO_CANCEL)


async def resume(uow: AbstractInventoryUnitOfWork, idle_seconds: float = 0.0) -> list[UUID]:
    """Send the next batch's message for every cancellation idle for ``idle_seconds`` (0: every one, at
    start-up). If the chain's own message is still on its way, one of the two is stale and changes nothing."""
    async with uow:
        resumed = []
        for event_id in await uow.events.cancelling(idle_seconds):
            event = await uow.events.lock(event_id)
            if event is not None and event.status is EventStatus.CANCELLING:
                uow.emit([ContinueEventCancellation(event_id=event.id, batch=event.next_batch)])
                resumed.append(event.id)
        await uow.commit()
    if resumed:
        log.info("event_cancel_resumed", events=[str(e) for e in resumed])
    return resumed


async def _progress(uow: AbstractInventoryUnitOfWork, event: Event) -> CancellationProgress:
    counts = await uow.orders.count_for_event(event.id)
    return cancellation_progress(
        event,
        counts.get(OrderStatus.PENDING, 0),
        counts.get(OrderStatus.PAID, 0),
        counts.get(OrderStatus.REFUND_PENDING, 0),
    )
