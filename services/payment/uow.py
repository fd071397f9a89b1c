"""The payment service's unit of work: one transaction on the ``payment`` schema, its repositories bound to it
(``store.py``: attempts, results, refunds and the orders' read view; ``ops_store.py``: reviews, failed refunds,
the audit log), and the messages it emits (written to ``payment.outbox`` on commit)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from services.payment.ops_store import Audit, FailedRefunds, Reviews
from services.payment.store import Attempts, Orders, Refunds, Results
from shared.uow import UnitOfWork


class PaymentUnitOfWork(UnitOfWork):
    orders: Orders
    attempts: Attempts
    results: Results
    refunds: Refunds
    reviews: Reviews
    failed_refunds: FailedRefunds
    audit: Audit

    def bind(self, conn: AsyncConnection) -> None:
        self.orders = Orders(conn)
        self.attempts = Attempts(conn)
        self.results = Results(conn)
        self.refunds = Refunds(conn)
        self.reviews = Reviews(conn)
        self.failed_refunds = FailedRefunds(conn)
        self.audit = Audit(conn)
