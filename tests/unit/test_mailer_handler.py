"""The mailer's consumer against fakes: an SMTP conversation that has started is finished and recorded even when
the consumer is cancelled (its broker connection dropped), so the redelivered message finds the email sent."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from typing import cast

from services.mailer.domain import EmailSpec
from services.mailer.handlers import Mailer
from services.mailer.sender import SmtpConfig, SmtpSender
from services.mailer.store import Claim, EmailStore
from shared.messaging import Delivery
from tests.harness import eventually
from tests.mailer_support import paid_order


class FakeStore:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def claim(self, spec: EmailSpec, message_id: str, subject: str) -> Claim:
        return Claim.ALREADY_SENT if spec.order_id in self.sent else Claim.GRANTED

    async def mark_sent(self, spec: EmailSpec, smtp_response: str) -> None:
        self.sent.append(spec.order_id)

    async def mark_failed(self, spec: EmailSpec, error: str) -> None:  # pragma: no cover - not reached here
        raise AssertionError(error)


class SlowSender:
    """An SMTP server that takes its time to answer DATA; counts what it was asked to deliver."""

    config = SmtpConfig("localhost", 25, "none", "", "", 5.0, "ticketing@example.com")

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.answer = asyncio.Event()
        self.deliveries = 0

    async def send(self, message: EmailMessage, recipient: str) -> str:
        self.deliveries += 1
        self.started.set()
        await self.answer.wait()
        return "250 OK"


def delivery(redelivered: bool = False) -> Delivery:
    return Delivery("order-paid:1", "corr", None, None, {}, "order.paid", redelivered)


async def test_a_cancelled_consumer_still_records_the_send_so_the_redelivery_sends_nothing() -> None:
    store, sender = FakeStore(), SlowSender()
    mailer = Mailer(cast(EmailStore, store), cast(SmtpSender, sender))
    msg = paid_order("an@example.com")

    first = asyncio.create_task(mailer.on_order_paid(msg, delivery()))
    await asyncio.wait_for(sender.started.wait(), 5)
    first.cancel()  # the broker connection dropped mid-send
    sender.answer.set()

    async def recorded() -> bool:
        return bool(store.sent)

    await eventually(recorded, timeout=5, what="the cancelled send recorded")

    await mailer.on_order_paid(msg, delivery(redelivered=True))  # the broker delivers it again
    assert sender.deliveries == 1 and store.sent == [str(msg.order_id)]
