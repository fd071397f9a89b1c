"""What an event's cancellation still has to do (pure: shared by inventory's replies and the organiser's reports,
which read the same counters through read_api.event_admin)."""

from __future__ import annotations

from uuid import UUID

from shared.messages import CancellationProgress, EventStatus


def progress_of(
    event_id: UUID,
    status: EventStatus,
    *,
    orders_cancelled: int,
    orders_sent_to_refund: int,
    batches: int,
    pending: int,
    paid: int,
    refund_pending: int,
) -> CancellationProgress:
    """What a cancellation still has to do. Nothing, for an event on sale; ``done`` counts the orders it
    cancelled plus those it refunded that the provider confirmed."""
    if status is EventStatus.ON_SALE:
        return CancellationProgress(event_id=event_id, status=status)
    return CancellationProgress(
        event_id=event_id,
        status=status,
        pending_to_cancel=pending,
        paid_to_refund=paid,
        refunds_pending=refund_pending,
        done=max(orders_cancelled + orders_sent_to_refund - refund_pending, 0),
        batches=batches,
    )
