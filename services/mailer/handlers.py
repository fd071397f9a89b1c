"""The mailer's consumers: event -> EmailSpec -> claim -> SMTP -> mark sent, with failures classified."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.mailer import domain, orders
from services.mailer.domain import Classification, EmailSpec, InvalidEmailData
from services.mailer.render import render
from services.mailer.sender import SmtpSender
from services.mailer.store import Claim, EmailStore
from shared import logs, metrics
from shared.messages import OrderExpired, OrderPaid, OrderRefunded, OrderReleased, ResendEmail
from shared.messaging import Delivery, PermanentError

log = logs.get_logger(__name__)

MARK_SENT_BACKOFF = (0.1, 0.5, 2.0)  # retried in-process: a lost 'sent' mark is the one duplicate window


class EmailDataError(PermanentError):
    """The message cannot become an email (bad recipient, missing data, template error)."""


class SmtpRejected(PermanentError):
    """The SMTP server answered 5xx: retrying the same message cannot help."""


class EmailInFlight(Exception):
    """Another worker is sending this email right now; retry later (it will then be 'sent')."""


@dataclass
class Mailer:
    store: EmailStore
    sender: SmtpSender
    engine: AsyncEngine | None = None  # reads the read_api views for resends

    async def on_order_paid(self, msg: OrderPaid, delivery: Delivery) -> None:
        await self.deliver(lambda: domain.for_paid(msg), delivery)

    async def on_order_expired(self, msg: OrderReleased, delivery: Delivery) -> None:
        await self.deliver(lambda: domain.for_expired(msg), delivery)

    async def on_order_refunded(self, msg: OrderRefunded, delivery: Delivery) -> None:
        await self.deliver(lambda: domain.for_refunded(msg), delivery)

    async def on_resend(self, msg: ResendEmail, delivery: Delivery) -> None:
        """A buyer asked for the order's current email again: rebuilt from the views and sent as a resend of
        its own (``resend_id``), so neither the first email nor an earlier resend counts as having sent it."""
        assert self.engine is not None
        current = await orders.current_message(self.engine, msg.order_id)
        if current is None:
            log.info("resend_nothing_to_send", order_id=str(msg.order_id), resend_id=str(msg.resend_id))
            return
        build = _SPEC_OF[type(current)]
        await self.deliver(lambda: build(current).resent(str(msg.resend_id)), delivery)

    async def on_order_cancelled(self, msg: OrderReleased, delivery: Delivery) -> None:
        if domain.emails_cancel(msg):  # the buyer's own cancel is not emailed; the event's cancellation is
            await self.deliver(lambda: domain.for_cancelled(msg), delivery)

    async def deliver(self, build: Callable[[], EmailSpec], delivery: Delivery) -> None:
        started = time.perf_counter()
        try:
            spec = build()
            message = render(spec, self.sender.config.sender)
        except InvalidEmailData as exc:
            raise EmailDataError(str(exc)) from exc
        kind = spec.kind.value
        claim = await self.store.claim(spec, delivery.message_id, str(message["Subject"]))
        if claim is Claim.ALREADY_SENT:
            metrics.EMAILS_DUPLICATE_SKIPPED.labels(kind=kind).inc()
            log.info("email_already_sent", kind=kind, order_id=spec.order_id, message_id=delivery.message_id)
            return
        if claim is Claim.IN_FLIGHT:
            raise EmailInFlight(f"{kind} email for order {spec.order_id} is being sent by another worker")
        # Once the SMTP conversation starts it is finished and recorded even if this consumer is cancelled (its
        # broker connection dropped): a cancelled send would leave the claim SENDING, and the redelivery would
        # send the email again when the lease ran out.
        await asyncio.shield(self._send(spec, message, started))

    async def _send(self, spec: EmailSpec, message: EmailMessage, started: float) -> None:
        kind = spec.kind.value
        try:
            reply = await self.sender.send(message, spec.recipient)
        except Exception as exc:
            classification = domain.classify(exc)
            metrics.EMAILS_FAILED.labels(kind=kind, classification=classification.value).inc()
            await self.store.mark_failed(spec, f"{type(exc).__name__}: {exc}")
            log.warning(
                "email_failed",
                kind=kind,
                order_id=spec.order_id,
                classification=classification.value,
                error=repr(exc)[:300],
            )  # addresses masked by the log pipeline
            if classification is Classification.PERMANENT:
                raise SmtpRejected(f"SMTP refused the {kind} email: {type(exc).__name__}: {exc}") from exc
            raise
        await self._mark_sent(spec, reply)
        metrics.EMAILS_SENT.labels(kind=kind).inc()
        metrics.EMAIL_SEND_SECONDS.observe(time.perf_counter() - started)
        log.info("email_sent", kind=kind, order_id=spec.order_id, recipient=spec.recipient)  # the pipeline masks it

    async def _mark_sent(self, spec: EmailSpec, reply: str) -> None:
        for pause in (*MARK_SENT_BACKOFF, None):
            try:
                await self.store.mark_sent(spec, reply)
                return
            except Exception as exc:
                if pause is None:
                    log.error(
                        "email_sent_but_not_recorded", order_id=spec.order_id, kind=spec.kind.value, error=repr(exc)
                    )
                    raise
                await asyncio.sleep(pause)


_SPEC_OF: dict[type, Callable[[Any], EmailSpec]] = {
    OrderPaid: domain.for_paid,
    OrderExpired: domain.for_expired,
    OrderRefunded: domain.for_refunded,
}
