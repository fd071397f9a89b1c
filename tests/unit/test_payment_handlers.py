"""The payment service's result handling against a fake unit of work: a provider result is recorded at most once,
a success is handed to inventory once, a recorded failure gives way to the provider's later word that the money
was taken, and a result for a wrong amount records nothing (no database, no broker; the end-to-end tests prove
the same against the real servers)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID

from services.payment.domain import AttemptStatus
from services.payment.handlers import Payments
from services.payment.store import NewAttempt
from shared.messages import PaymentSucceeded
from shared.payments import answers
from shared.payments.answers import OrderFacts
from shared.payments.providers.base import Notification, Outcome, PaymentProvider
from shared.settings import Settings
from tests.unit.fakes import NOW, FakeUnitOfWork

PROVIDER = "vnpay"


class FakeOrders:
    def __init__(self) -> None:
        self.facts_by_id: dict[UUID, OrderFacts] = {}

    async def facts(self, order_id: UUID) -> OrderFacts | None:
        return self.facts_by_id.get(order_id)


class FakeAttempts:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def register(self, provider: str, attempts: Sequence[NewAttempt]) -> None:
        for a in attempts:  # ON CONFLICT DO NOTHING
            self.rows.setdefault(a.txn_ref, {"order_id": a.order_id, "attempt": a.attempt, "status": "STARTED"})

    async def register_one(
        self, provider: str, txn_ref: str, order_id: UUID, attempt: int, amount: int, created: datetime, exp: datetime
    ) -> None:
        await self.register(provider, [NewAttempt(txn_ref, order_id, attempt, amount, created, exp)])

    async def settle(self, txn_ref: str, status: AttemptStatus) -> None:
        if self.rows[txn_ref]["status"] == "STARTED":
            self.rows[txn_ref]["status"] = status.value


class FakeResults:
    def __init__(self, attempts: FakeAttempts) -> None:
        self.attempts = attempts
        self.rows: dict[tuple[str, str], Outcome] = {}
        self.superseded: list[Outcome] = []

    async def record(self, n: Notification, source: str) -> bool:
        if (n.provider, n.txn_ref) in self.rows:
            return False
        self.rows[(n.provider, n.txn_ref)] = n.outcome
        return True

    async def recorded(self, provider: str, txn_ref: str) -> Outcome | None:
        return self.rows.get((provider, txn_ref))

    async def supersede(self, n: Notification, source: str) -> bool:
        if self.rows.get((n.provider, n.txn_ref)) is not Outcome.FAILED:
            return False
        self.superseded.append(self.rows[(n.provider, n.txn_ref)])
        self.rows[(n.provider, n.txn_ref)] = n.outcome
        self.attempts.rows[n.txn_ref]["status"] = n.outcome.value
        for row in self.attempts.rows.values():  # later attempts of the order will never be paid
            if row["order_id"] == n.order_id and row["attempt"] > n.attempt and row["status"] == "STARTED":
                row["status"] = "ABANDONED"
        return True


class FakePaymentUnitOfWork(FakeUnitOfWork):
    """Shares its repositories between units of work (the 'database'); records what each commit published."""

    def __init__(self) -> None:
        super().__init__()
        self.orders, self.attempts = FakeOrders(), FakeAttempts()
        self.results = FakeResults(self.attempts)


class ReferenceMaker:
    """The one part of the provider the result path uses: the reference of an order's next attempt."""

    name = PROVIDER

    def txn_ref(self, order_id: UUID, attempt: int) -> str:
        return f"{order_id.hex}{attempt:02d}"


def payments_on(uow: FakePaymentUnitOfWork) -> Payments:
    provider = cast(PaymentProvider, ReferenceMaker())
    payments = Payments(cast(Any, None), cast(Any, None), cast(Any, None), {PROVIDER: provider}, Settings())
    payments.new_uow = lambda: uow  # type: ignore[assignment,method-assign,return-value]
    return payments


def held_order(uow: FakePaymentUnitOfWork, total: int = 200_000) -> UUID:
    order_id = uuid.uuid4()
    uow.orders.facts_by_id[order_id] = OrderFacts(total, "PENDING", NOW, NOW + timedelta(minutes=15))
    return order_id


def result(order_id: UUID, outcome: Outcome, attempt: int = 1, amount: int = 200_000) -> Notification:
    code = {Outcome.SUCCEEDED: "00", Outcome.FAILED: "24", Outcome.REVIEW: "07"}[outcome]
    return Notification(
        PROVIDER, f"{order_id.hex}{attempt:02d}", order_id, attempt, amount, outcome, code, code, "14000001", NOW, {}
    )


async def test_a_success_is_recorded_once_and_handed_to_inventory_once() -> None:
    uow = FakePaymentUnitOfWork()
    payments = payments_on(uow)
    order_id = held_order(uow)

    assert await payments.apply(result(order_id, Outcome.SUCCEEDED), "ipn") == answers.RECORDED
    assert await payments.apply(result(order_id, Outcome.SUCCEEDED), "querydr") == answers.ALREADY_CONFIRMED

    assert [type(m) for m in uow.published] == [PaymentSucceeded]
    paid = uow.published[0]
    assert isinstance(paid, PaymentSucceeded) and paid.order_id == order_id and paid.amount == 200_000
    assert uow.attempts.rows[f"{order_id.hex}01"]["status"] == "SUCCEEDED"


async def test_a_result_for_another_amount_or_an_unknown_order_records_nothing() -> None:
    uow = FakePaymentUnitOfWork()
    payments = payments_on(uow)
    order_id = held_order(uow, total=200_000)

    assert await payments.apply(result(order_id, Outcome.SUCCEEDED, amount=1_000), "ipn") == answers.WRONG_AMOUNT
    assert await payments.apply(result(uuid.uuid4(), Outcome.SUCCEEDED), "ipn") == answers.UNKNOWN_ORDER
    assert uow.results.rows == {} and uow.attempts.rows == {} and uow.published == []


async def test_a_recorded_failure_gives_way_to_the_providers_later_success() -> None:
    uow = FakePaymentUnitOfWork()
    payments = payments_on(uow)
    order_id = held_order(uow)

    assert await payments.apply(result(order_id, Outcome.FAILED), "ipn") == answers.RECORDED
    assert uow.attempts.rows[f"{order_id.hex}02"]["status"] == "STARTED"  # the buyer may try again
    assert uow.published == []

    assert await payments.apply(result(order_id, Outcome.SUCCEEDED), "querydr") == answers.RECORDED
    assert uow.results.superseded == [Outcome.FAILED]
    assert uow.attempts.rows[f"{order_id.hex}01"]["status"] == "SUCCEEDED"
    assert uow.attempts.rows[f"{order_id.hex}02"]["status"] == "ABANDONED"
    assert [type(m) for m in uow.published] == [PaymentSucceeded]
