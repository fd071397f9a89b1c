"""The gateway's sold-out gate (pure logic): it closes on inventory's word, opens on stock coming back."""

from __future__ import annotations

import uuid

import pytest

from services.gateway import soldout
from services.gateway.soldout import SoldOutGate
from shared.messages import CheckoutDecided, StockChanged


def change(tt: uuid.UUID, held: int, sold: int, capacity: int = 2, version: int = 0) -> StockChanged:
    return StockChanged(
        ticket_type_id=tt, event_id=uuid.uuid4(), capacity=capacity, held=held, sold=sold, stock_version=version
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(soldout.time, "monotonic", lambda: now[0])
    return now


def test_closed_types_are_refused_until_stock_comes_back(clock: list[float]) -> None:
    gate, gone, other = SoldOutGate(60), uuid.uuid4(), uuid.uuid4()
    assert gate.closed_for([gone]) is None
    gate.close({gone: 0})
    assert gate.closed_for([other, gone]) == gone and gate.closed_for([other]) is None
    clock[0] += 1
    gate.on_stock_changed(change(gone, held=1, sold=1))  # still nothing left: stays closed
    assert gate.closed_for([gone]) == gone
    gate.on_stock_changed(change(gone, held=0, sold=1))  # a hold was released
    assert gate.closed_for([gone]) is None


def test_a_stock_message_older_than_the_close_does_not_open_it(clock: list[float]) -> None:
    """The batch before the sold-out one publishes its stock.changed (with stock left) through the outbox, so
    it routinely arrives after the sold-out answer: it must not let the crowd through, however late it is."""
    gate, tt = SoldOutGate(60), uuid.uuid4()
    gate.answered([tt], {tt: 7})  # the batch that took the last ticket left the type at stock version 7
    clock[0] += 30
    gate.on_stock_changed(change(tt, held=1, sold=0, version=6))  # the batch before it
    assert gate.closed_for([tt]) == tt
    gate.on_stock_changed(change(tt, held=2, sold=0, version=7))  # not newer than the close either
    assert gate.closed_for([tt]) == tt
    gate.on_stock_changed(change(tt, held=1, sold=0, version=8))  # a hold released after the close
    assert gate.closed_for([tt]) is None


def test_a_stock_message_without_a_version_opens_the_gate(clock: list[float]) -> None:
    """An older inventory's messages carry no version: opening is the safe side (the gate only saves work)."""
    gate, tt, other = SoldOutGate(60), uuid.uuid4(), uuid.uuid4()
    gate.answered([tt, other], {tt: 7, other: 0})
    gate.on_stock_changed(change(tt, held=1, sold=0))
    gate.on_stock_changed(change(other, held=1, sold=0, version=3))
    assert gate.closed_for([tt]) is None and gate.closed_for([other]) is None


def test_an_expired_mark_lets_one_probe_through_and_its_answer_decides(clock: list[float]) -> None:
    gate, tt, other = SoldOutGate(1), uuid.uuid4(), uuid.uuid4()
    gate.answered([tt, other], {tt: 1})
    clock[0] += 1.1
    assert gate.closed_for([tt]) is None  # the probe goes to inventory
    assert [gate.closed_for([tt]) for _ in range(3)] == [tt, tt, tt]  # the crowd waits for its answer
    gate.answered([tt], {tt: 1})  # still empty: closed again, for a whole mark
    clock[0] += 0.9
    assert gate.closed_for([tt]) == tt
    clock[0] += 0.2
    assert gate.closed_for([tt]) is None  # the next probe
    gate.answered([tt], {})  # inventory had stock of it: open for everyone
    assert gate.closed_for([tt]) is None and gate.closed_for([tt]) is None


def test_a_probe_that_gets_no_answer_is_followed_by_another_a_mark_later(clock: list[float]) -> None:
    gate, tt = SoldOutGate(1), uuid.uuid4()
    gate.close({tt: 0})
    clock[0] += 1.1
    assert gate.closed_for([tt]) is None  # its answer never comes (202 after the checkout wait)
    clock[0] += 0.5
    assert gate.closed_for([tt]) == tt
    clock[0] += 0.6
    assert gate.closed_for([tt]) is None


def test_a_mark_expires_and_a_zero_duration_gate_never_closes(clock: list[float]) -> None:
    gate, off, tt = SoldOutGate(5), SoldOutGate(0), uuid.uuid4()
    gate.close({tt: 0})
    off.close({tt: 0})
    assert off.closed_for([tt]) is None
    clock[0] += 4.9
    assert gate.closed_for([tt]) == tt
    clock[0] += 0.2  # past the mark's end: a missed stock.changed cannot keep a type closed for ever
    assert gate.closed_for([tt]) is None


def test_an_older_inventorys_answer_without_versions_still_closes_the_gate(clock: list[float]) -> None:
    """Before migration 0012 inventory answered a plain list: it closes at version 0 (not known)."""
    tt = uuid.uuid4()
    old = CheckoutDecided.model_validate(
        {
            "outcome": "rejected",
            "created": True,
            "sold_out": [str(tt)],
            "order": {"order_id": str(uuid.uuid4()), "user_id": "u", "status": "REJECTED", "total": 0, "items": []},
        }
    )
    assert old.sold_out_at() == {tt: 0}
    gate = SoldOutGate(60)
    gate.answered([tt], old.sold_out_at())
    assert gate.closed_for([tt]) == tt
