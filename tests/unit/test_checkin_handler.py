"""Inventory's check-in handler against a fake unit of work: it admits once, tells a second scan the first
admission, commits only an admission, and says nothing of a ticket of another event."""

from __future__ import annotations

import uuid

from services.inventory import handlers
from services.inventory.domain import TicketAtDoor
from shared.messages import CheckIn, CheckInOutcome, OrderStatus
from tests.unit.fakes import NOW, FakeDoor, FakeInventoryUnitOfWork

EVENT = uuid.uuid4()


def door_uow(status: OrderStatus = OrderStatus.PAID) -> tuple[FakeInventoryUnitOfWork, FakeDoor]:
    uow = FakeInventoryUnitOfWork()
    uow.door.tickets["CODE"] = TicketAtDoor(uuid.uuid4(), uuid.uuid4(), EVENT, status, None)
    return uow, uow.door


def scan(event_id: uuid.UUID = EVENT, code: str = "CODE") -> CheckIn:
    return CheckIn(event_id=event_id, code=code, actor="user:door")


async def test_the_first_scan_admits_and_commits_the_second_gets_the_first_admission() -> None:
    uow, door = door_uow()
    first = await handlers.check_in(scan(), uow)
    assert first.outcome is CheckInOutcome.ADMITTED and first.admitted_at == NOW
    assert first.ticket_id == door.tickets["CODE"].ticket_id and uow.commits == 1
    second = await handlers.check_in(scan(), uow)
    assert second.outcome is CheckInOutcome.ALREADY_ADMITTED and second.admitted_at == NOW
    assert uow.commits == 1  # nothing more written


async def test_a_scan_that_loses_the_race_in_the_update_answers_already_admitted() -> None:
    uow, door = door_uow()
    door.lose_race = True
    answer = await handlers.check_in(scan(), uow)
    assert answer.outcome is CheckInOutcome.ALREADY_ADMITTED and answer.admitted_at == NOW


async def test_void_wrong_event_and_unknown_codes_write_nothing() -> None:
    uow, _ = door_uow(OrderStatus.REFUNDED)
    void = await handlers.check_in(scan(), uow)
    assert void.outcome is CheckInOutcome.VOID and void.order_status is OrderStatus.REFUNDED
    wrong = await handlers.check_in(scan(event_id=uuid.uuid4()), uow)
    assert wrong.outcome is CheckInOutcome.WRONG_EVENT and wrong.ticket_id is None and wrong.order_status is None
    unknown = await handlers.check_in(scan(code="NOPE"), uow)
    assert unknown.outcome is CheckInOutcome.NOT_FOUND
    assert uow.commits == 0
