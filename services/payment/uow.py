"""The payment service's unit of work: one transaction on the ``payment`` schema and the messages it emits
(written to ``payment.outbox`` on commit). Its SQL lives in ``store.py`` and ``ops_store.py``, as functions of
``uow.conn``."""

from __future__ import annotations

from shared.uow import UnitOfWork


class PaymentUnitOfWork(UnitOfWork):
    """No repositories of its own yet: the payment SQL takes the unit of work's connection."""
