"""The gateway's sold-out gate (pure logic): it closes on inventory's word, opens on stock coming back."""

from __future__ import annotations

import uuid

import pytest

from services.gateway import soldout
from services.gateway.soldout import SoldOutGate
from shared.messages import StockChanged


def change(tt: uuid.UUID, held: int, sold: int, capacity: int = 2) -> StockChanged:
    return StockChanged(ticket_type_id=tt, event_id=uuid.uuid4(), capacity=capacity, held=held, sold=sold)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(soldout.time, "monotonic", lambda: now[0])
    return now


def test_closed_types_are_refused_until_stock_comes_back(clock: list[float]) -> None:
    gate, gone, other = SoldOutGate(60), uuid.uuid4(), uuid.uuid4()
    assert gate.closed_for([gone]) is None
    gate.close([gone])
    assert gate.closed_for([other, gone]) == gone and gate.closed_for([other]) is None
    clock[0] += 1
    gate.on_stock_changed(change(gone, held=1, sold=1))  # still nothing left: stays closed
    assert gate.closed_for([gone]) == gone
    gate.on_stock_changed(change(gone, held=0, sold=1))  # a hold was released
    assert gate.closed_for([gone]) is None


def test_a_stock_message_older_than_the_close_does_not_open_it(clock: list[float]) -> None:
    """The batch before the sold-out one publishes its stock.changed (with stock left) through the outbox, so
    it routinely arrives after the sold-out answer: it must not let the crowd through."""
    gate, tt = SoldOutGate(60), uuid.uuid4()
    gate.answered([tt], [tt])
    clock[0] += soldout.STALE_SECONDS / 2
    gate.on_stock_changed(change(tt, held=1, sold=0))
    assert gate.closed_for([tt]) == tt
    clock[0] += soldout.STALE_SECONDS
    gate.on_stock_changed(change(tt, held=1, sold=0))  # later than that: stock really came back
    assert gate.closed_for([tt]) is None


def test_an_expired_mark_lets_one_probe_through_and_its_answer_decides(clock: list[float]) -> None:
    gate, tt, other = SoldOutGate(1), uuid.uuid4(), uuid.uuid4()
    gate.answered([tt, other], [tt])
    clock[0] += 1.1
    assert gate.closed_for([tt]) is None  # the probe goes to inventory
    assert [gate.closed_for([tt]) for _ in range(3)] == [tt, tt, tt]  # the crowd waits for its answer
    gate.answered([tt], [tt])  # still empty: closed again, for a whole mark
    clock[0] += 0.9
    assert gate.closed_for([tt]) == tt
    clock[0] += 0.2
    assert gate.closed_for([tt]) is None  # the next probe
    gate.answered([tt], [])  # inventory had stock of it: open for everyone
    assert gate.closed_for([tt]) is None and gate.closed_for([tt]) is None


def test_a_probe_that_gets_no_answer_is_followed_by_another_a_mark_later(clock: list[float]) -> None:
    gate, tt = SoldOutGate(1), uuid.uuid4()
    gate.close([tt])
    clock[0] += 1.1
    assert gate.closed_for([tt]) is None  # its answer never comes (202 after the checkout wait)
    clock[0] += 0.5
    assert gate.closed_for([tt]) == tt
    clock[0] += 0.6
    assert gate.closed_for([tt]) is None


def test_a_mark_expires_and_a_zero_duration_gate_never_closes(clock: list[float]) -> None:
    gate, off, tt = SoldOutGate(5), SoldOutGate(0), uuid.uuid4()
    gate.close([tt])
    off.close([tt])
    assert off.closed_for([tt]) is None
    clock[0] += 4.9
    assert gate.closed_for([tt]) == tt
    clock[0] += 0.2  # past the mark's end: a missed stock.changed cannot keep a type closed for ever
    assert gate.closed_for([tt]) is None
