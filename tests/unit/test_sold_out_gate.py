"""The gateway's sold-out gate (pure logic): it closes on inventory's word, opens on stock coming back."""

from __future__ import annotations

import uuid

import pytest

from services.gateway import soldout
from services.gateway.soldout import SoldOutGate
from shared.messages import StockChanged


def change(tt: uuid.UUID, held: int, sold: int, capacity: int = 2) -> StockChanged:
    return StockChanged(ticket_type_id=tt, event_id=uuid.uuid4(), capacity=capacity, held=held, sold=sold)


def test_closed_types_are_refused_until_stock_comes_back() -> None:
    gate, gone, other = SoldOutGate(60), uuid.uuid4(), uuid.uuid4()
    assert gate.closed_for([gone]) is None
    gate.close([gone])
    assert gate.closed_for([other, gone]) == gone and gate.closed_for([other]) is None
    gate.on_stock_changed(change(gone, held=1, sold=1))  # still nothing left: stays closed
    assert gate.closed_for([gone]) == gone
    gate.on_stock_changed(change(gone, held=0, sold=1))  # a hold was released
    assert gate.closed_for([gone]) is None


def test_a_mark_expires_and_a_zero_duration_gate_never_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    gate, off, tt = SoldOutGate(5), SoldOutGate(0), uuid.uuid4()
    clock = [1000.0]
    monkeypatch.setattr(soldout.time, "monotonic", lambda: clock[0])
    gate.close([tt])
    off.close([tt])
    assert off.closed_for([tt]) is None
    clock[0] += 4.9
    assert gate.closed_for([tt]) == tt
    clock[0] += 0.2  # past the mark's end: a missed stock.changed cannot keep a type closed for ever
    assert gate.closed_for([tt]) is None
