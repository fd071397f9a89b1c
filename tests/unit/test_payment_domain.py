"""Payment and late-sale rules, without I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.inventory.domain import StockLevel, stock_still_free
from services.payment import domain
from shared.messages import PricedLine
from shared.payments import answers
from shared.payments.providers.base import Notification, Outcome

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def note(amount: int = 100_000, outcome: Outcome = Outcome.SUCCEEDED, attempt: int = 1) -> Notification:
    order = uuid.uuid4()
    return Notification("vnpay", f"{order.hex}{attempt:02d}", order, attempt, amount, outcome, "00", "00", "1", NOW, {})


def facts(total: int = 100_000, status: str = "PENDING", held: bool = True) -> answers.OrderFacts:
    return answers.OrderFacts(total, status, NOW, NOW + timedelta(minutes=15) if held else None)


def test_precheck_answers_unknown_order_and_wrong_amount() -> None:
    assert answers.precheck(note(), None) == answers.UNKNOWN_ORDER
    assert answers.precheck(note(), facts(held=False)) == answers.UNKNOWN_ORDER  # a REJECTED order was never held
    assert answers.precheck(note(99_999), facts()) == answers.WRONG_AMOUNT
    assert answers.precheck(note(), facts()) is None
    assert answers.precheck(note(), facts(status="EXPIRED")) is None  # late payments are recorded, then decided


def test_a_failed_attempt_of_a_pending_order_opens_the_next() -> None:
    assert domain.next_attempt(note(outcome=Outcome.FAILED), facts()) == 2
    assert domain.next_attempt(note(outcome=Outcome.FAILED), facts(status="EXPIRED")) is None
    assert domain.next_attempt(note(outcome=Outcome.SUCCEEDED), facts()) is None
    assert domain.next_attempt(note(outcome=Outcome.REVIEW), facts()) is None
    assert domain.next_attempt(note(outcome=Outcome.FAILED, attempt=99), facts()) is None


def test_reconciliation_gives_up_only_after_the_window() -> None:
    assert not domain.abandoned(NOW, NOW + timedelta(minutes=59), 3600)
    assert domain.abandoned(NOW, NOW + timedelta(minutes=61), 3600)


def level(capacity: int, held: int, sold: int, limit: int = 4) -> StockLevel:
    return StockLevel(uuid.uuid4(), uuid.uuid4(), 100_000, capacity, held, sold, limit, 900, NOW + timedelta(days=9))


def test_late_payment_takes_the_stock_again_only_if_it_fits() -> None:
    free, tight = level(10, 5, 3), level(10, 6, 3)
    line = lambda s, q: PricedLine(ticket_type_id=s.ticket_type_id, quantity=q, unit_price=100_000)  # noqa: E731
    assert stock_still_free([line(free, 2)], {free.ticket_type_id: free}, {}, "u")
    assert not stock_still_free([line(tight, 2)], {tight.ticket_type_id: tight}, {}, "u")
    assert not stock_still_free([line(free, 2)], {free.ticket_type_id: free}, {("u", free.ticket_type_id): 3}, "u")
    assert not stock_still_free(
        [line(free, 1), line(tight, 2)], {free.ticket_type_id: free, tight.ticket_type_id: tight}, {}, "u"
    )


def test_the_payment_attempt_state_machine_guards_every_move() -> None:
    s = domain.AttemptStatus
    assert domain.can_move(s.STARTED, s.SUCCEEDED) and domain.can_move(s.FAILED, s.SUCCEEDED)
    assert domain.can_move(s.REVIEW, s.ACCEPTED) and domain.can_move(s.REVIEW, s.REJECTED)
    for done in (s.SUCCEEDED, s.ABANDONED, s.ACCEPTED, s.REJECTED):  # final: nothing follows
        assert not any(domain.can_move(done, new) for new in s)
    assert not domain.can_move(s.SUCCEEDED, s.FAILED)  # a later failure never undoes a success
    assert not domain.can_move(s.STARTED, s.ACCEPTED)  # only a review is accepted
    # The guards the store writes with come from the same table.
    assert domain.sources_of(s.SUCCEEDED) == ["FAILED", "STARTED"]
    assert domain.sources_of(s.ACCEPTED) == ["REVIEW"] and domain.sources_of(s.ABANDONED) == ["STARTED"]
