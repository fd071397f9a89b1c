"""Inventory's command and event handlers: each takes its message and a fresh unit of work, calls the domain,
commits, and returns its typed reply (the wiring in ``app.py`` sends the reply to the caller, if any).

Where things happen: a hold is taken in ``holds.py`` (group commit), released in ``releases.py``, and turned
into a sale or a refund in ``sales.py``.
"""

from __future__ import annotations

from services.inventory import domain, releases
from services.inventory.uow import AbstractInventoryUnitOfWork
from shared.messages import (
    AddTicketType,
    CancelAnswered,
    CancelOrder,
    CancelOutcome,
    CatalogChanged,
    CatalogOutcome,
    CheckIn,
    CheckInAnswered,
    CheckInOutcome,
    CreateEvent,
    EventCreated,
    OrderStatus,
    TicketTypeAdded,
)


async def cancel_order(cmd: CancelOrder, uow: AbstractInventoryUnitOfWork) -> CancelAnswered:
    async with uow:
        order = await uow.orders.lock(cmd.order_id)
        if order is None or (order.user_id != cmd.user_id and not cmd.is_admin):
            return CancelAnswered(outcome=CancelOutcome.NOT_FOUND)
        if order.status is not OrderStatus.PENDING:
            return CancelAnswered(outcome=CancelOutcome.NOT_PENDING, order=await uow.orders.view(order.id))
        await releases.release(uow, [order], "cancel")
        await uow.commit()
    return CancelAnswered(outcome=CancelOutcome.CANCELLED, order=order.view())


async def create_event(cmd: CreateEvent, uow: AbstractInventoryUnitOfWork) -> CatalogChanged:
    async with uow:
        if not await uow.catalog.add_event(cmd):  # the same event id again: a repeated command
            return CatalogChanged(outcome=CatalogOutcome.ALREADY_EXISTED, event_id=cmd.event_id)
        info = await uow.catalog.event(cmd.event_id)
        assert info is not None
        uow.emit([EventCreated(**dict(info))])
        await uow.commit()
    return CatalogChanged(outcome=CatalogOutcome.CREATED, event_id=cmd.event_id)


async def add_ticket_type(cmd: AddTicketType, uow: AbstractInventoryUnitOfWork) -> CatalogChanged:
    async with uow:
        if not await uow.catalog.add_ticket_types(cmd.event_id, [cmd.ticket_type]):
            return CatalogChanged(outcome=CatalogOutcome.EVENT_NOT_FOUND, event_id=cmd.event_id)
        info = await uow.catalog.event(cmd.event_id)
        assert info is not None
        uow.emit([TicketTypeAdded(**dict(info), ticket_type_id=cmd.ticket_type.ticket_type_id)])
        await uow.commit()
    return CatalogChanged(outcome=CatalogOutcome.CREATED, event_id=cmd.event_id)


async def check_in(cmd: CheckIn, uow: AbstractInventoryUnitOfWork) -> CheckInAnswered:
    """Admit a ticket at its event's door, once (docs/ARCHITECTURE.md, "Door: check-in")."""
    async with uow:
        ticket = await uow.door.presented(cmd.code)  # its order's row locked FOR SHARE
        outcome = domain.admission(ticket, cmd.event_id)
        if ticket is None or outcome is CheckInOutcome.NOT_FOUND:
            return CheckInAnswered(outcome=CheckInOutcome.NOT_FOUND)
        if outcome is CheckInOutcome.WRONG_EVENT:
            return CheckInAnswered(outcome=outcome)  # nothing about a ticket of another event
        admitted_at = ticket.admitted_at
        if outcome is CheckInOutcome.ADMITTED:
            admitted_at = await uow.door.admit(cmd.code, cmd.actor)
            if admitted_at is None:  # another scan of this code committed first
                outcome, admitted_at = CheckInOutcome.ALREADY_ADMITTED, await uow.door.admitted_at(cmd.code)
            await uow.commit()
    return CheckInAnswered(
        outcome=outcome,
        ticket_id=ticket.ticket_id,
        ticket_type_id=ticket.ticket_type_id,
        admitted_at=admitted_at,
        order_status=ticket.order_status if outcome is CheckInOutcome.VOID else None,
    )
