"""Every exchange, queue and routing key in one place, with the configured prefix.

All work queues are durable quorum queues with a delivery limit (poison messages cannot loop) and a
dead-letter target: their service's dead-letter queue. Retries go through a ladder of TTL queues that
dead-letter back into the work queue (see docs/ARCHITECTURE.md, "Messaging"); those and the hold delay queues
are durable classic queues (see retry_queue_args for why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

# Routing keys (one name for one thing: these are also the message types).
CHECKOUT_REQUESTED = "checkout.requested"  # one checkout (what older gateways sent; still consumed)
CHECKOUT_BATCH = "checkout.batch"  # the checkouts one gateway coalesced into one message
ORDER_HELD = "order.held"  # one order (what older inventories sent; still consumed)
ORDERS_HELD = "orders.held"  # every order one hold batch held
ORDER_REJECTED = "order.rejected"
ORDER_EXPIRED = "order.expired"
ORDER_CANCELLED = "order.cancelled"
ORDER_PAID = "order.paid"
ORDER_REFUND_PENDING = "order.refund_pending"
ORDER_REFUNDED = "order.refunded"
HOLD_EXPIRY_DUE = "hold.expiry_due"
STOCK_CHANGED = "stock.changed"
EVENT_CREATED = "catalog.event_created"
TICKET_TYPE_ADDED = "catalog.ticket_type_added"
CREATE_EVENT = "command.create_event"
ADD_TICKET_TYPE = "command.add_ticket_type"
CANCEL_ORDER = "command.cancel_order"
# Door staff admit a ticket: request/reply to inventory (on its command queue: no queue of its own).
CHECK_IN = "command.check_in"
# A buyer asks for an order's email again: to the mailer's work queue (no queue of its own, no reply).
RESEND_EMAIL = "command.resend_email"
# Organiser actions: on inventory's command queue; the cancellation continues itself in batches.
REFUND_ORDER = "command.refund_order"
CANCEL_EVENT = "command.cancel_event"
CONTINUE_EVENT_CANCELLATION = "command.continue_event_cancellation"
EVENT_CANCELLED = "catalog.event_cancelled"
# Payments: a verified provider notification, and the payment service's results for inventory.
PAYMENT_NOTIFIED = "payment.notified"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_REFUNDED = "payment.refunded"
# Payment operator actions (review accept/reject, refund retry, listings): request/reply to the payment service.
PAYMENT_OP = "command.payment_op"
# Dead-letter replays and purges: request/reply to the ops service, which owns the dead letters.
DLQ_ACTION = "command.dlq_action"
# Background jobs (long dead-letter replays): submitted to the ops service, which runs them in chunks.
START_JOB = "command.start_job"


@dataclass(frozen=True)
class Names:
    prefix: str = ""

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}ticketing.events"

    def queue(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def dlq(self, service: str) -> str:
        return f"{self.prefix}{service}.dlq"

    def retry_queue(self, work_queue: str, seconds: int) -> str:
        # "-classic": these were quorum queues once; a new name, not a declaration conflict.
        return f"{work_queue}.retry-classic.{seconds}s"

    def hold_delay_queue(self, hold_seconds: int) -> str:
        # Named by its TTL: a change of the TTL rule gets a new queue instead of a declaration conflict.
        return f"{self.prefix}inventory.hold-delay-classic.{hold_delay_ttl_ms(hold_seconds)}ms"

    def redis_key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)


@dataclass(frozen=True)
class WorkQueue:
    """A durable quorum queue consumed by one service, bound to routing keys on the events exchange."""

    service: str
    name: str  # without prefix
    bindings: tuple[str, ...]
    retry_delays: tuple[int, ...] = (1, 5, 30)
    extra_args: dict[str, Any] = field(default_factory=dict)


INVENTORY_CHECKOUT = WorkQueue("inventory", "inventory.checkout", (CHECKOUT_REQUESTED, CHECKOUT_BATCH))
INVENTORY_COMMANDS = WorkQueue(
    "inventory",
    "inventory.commands",
    (CREATE_EVENT, ADD_TICKET_TYPE, CANCEL_ORDER, CHECK_IN, REFUND_ORDER, CANCEL_EVENT, CONTINUE_EVENT_CANCELLATION),
)
INVENTORY_HOLD_EXPIRY = WorkQueue("inventory", "inventory.hold-expiry", (HOLD_EXPIRY_DUE,))
# Payments: inventory turns payments into sales; the payment service records notifications and tracks orders.
INVENTORY_PAYMENTS = WorkQueue("inventory", "inventory.payments", (PAYMENT_SUCCEEDED, PAYMENT_REFUNDED))
PAYMENT_NOTIFICATIONS = WorkQueue("payment", "payment.notifications", (PAYMENT_NOTIFIED,))
PAYMENT_ORDERS = WorkQueue("payment", "payment.orders", (ORDER_HELD, ORDERS_HELD, ORDER_REFUND_PENDING))
PAYMENT_COMMANDS = WorkQueue("payment", "payment.commands", (PAYMENT_OP,))
# Search: catalog changes written through to the index; stock changes refresh availability.
OPS_COMMANDS = WorkQueue("ops", "ops.commands", (DLQ_ACTION, START_JOB))
SEARCH_CATALOG = WorkQueue(
    "search", "search.catalog", (EVENT_CREATED, TICKET_TYPE_ADDED, STOCK_CHANGED, EVENT_CANCELLED)
)

# Mailer: ticket, expiry and refund email. Its retry ladder is a setting (TICKETING_MAILER_RETRY_DELAYS), so the
# service builds its queue with mailer_notifications(settings.mailer_retry_delays); this is the default.
MAILER_RETRY_DELAYS: tuple[int, ...] = (5, 30, 120, 600)


def mailer_notifications(retry_delays: tuple[int, ...] = MAILER_RETRY_DELAYS) -> WorkQueue:
    return WorkQueue(
        "mailer",
        "mailer.notifications",
        # order.cancelled: only a hold the event's cancellation released is emailed (the buyer's own cancel is not)
        (ORDER_PAID, ORDER_EXPIRED, ORDER_REFUNDED, RESEND_EMAIL, ORDER_CANCELLED),
        retry_delays=tuple(retry_delays),
    )


MAILER_NOTIFICATIONS = mailer_notifications()

SERVICE_QUEUES: dict[str, tuple[WorkQueue, ...]] = {
    "inventory": (INVENTORY_CHECKOUT, INVENTORY_COMMANDS, INVENTORY_HOLD_EXPIRY, INVENTORY_PAYMENTS),
    "payment": (PAYMENT_NOTIFICATIONS, PAYMENT_ORDERS, PAYMENT_COMMANDS),
    "mailer": (MAILER_NOTIFICATIONS,),
    "search": (SEARCH_CATALOG,),
    "ops": (OPS_COMMANDS,),
}

# Every service that has (or will have) a dead-letter queue: the DLQ keeper drains them all.
DLQ_SERVICES: tuple[str, ...] = ("inventory", "payment", "mailer", "search", "ops")


def work_queue_args(names: Names, q: WorkQueue, delivery_limit: int, max_length: int = 0) -> dict[str, Any]:
    # With a bound, a full queue refuses new publishes (reject-publish): the publisher's confirm fails and the
    # gateway answers 503 instead of the broker filling its disk. Without one, reject-publish never engages.
    bound = {"x-max-length": max_length} if max_length > 0 else {}
    return {
        **bound,
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        # Rejected or over-delivered messages land in the service's DLQ (at-least-once needs reject-publish).
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": names.dlq(q.service),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        **q.extra_args,
    }


# Retry steps and hold delays are durable *classic* queues: a quorum queue costs the broker a Raft
# log and a few file descriptors each, and RabbitMQ 3.10 wedged at ~300 of them. What they hold is persistent
# and survives a restart; what a classic queue gives up is at-least-once dead-lettering (a node crash in the
# instant a TTL fires could drop that one message). For a retry, the message then is lost as if its handler
# had failed for good (the original stays in no DLQ: accepted, see decisions.md); for a hold, the sweeper
# releases every overdue hold anyway, and a release is never early because the TTL only ever fires late.
def retry_queue_args(names: Names, q: WorkQueue, seconds: int) -> dict[str, Any]:
    return {
        "x-queue-type": "classic",
        "x-message-ttl": seconds * 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": names.queue(q.name),
        "x-overflow": "reject-publish",
    }


def hold_delay_args(names: Names) -> dict[str, Any]:
    return {
        "x-queue-type": "classic",
        "x-dead-letter-exchange": names.events_exchange,
        "x-dead-letter-routing-key": HOLD_EXPIRY_DUE,
        "x-overflow": "reject-publish",
    }


async def declare_exchange(channel: AbstractChannel, names: Names) -> AbstractExchange:
    return await channel.declare_exchange(names.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)


async def declare_dlq(channel: AbstractChannel, names: Names, service: str) -> None:
    await channel.declare_queue(names.dlq(service), durable=True, arguments={"x-queue-type": "quorum"})


async def declare_service(
    channel: AbstractChannel,
    names: Names,
    service: str,
    delivery_limit: int,
    queues: tuple[WorkQueue, ...] | None = None,
    max_length: int = 0,
) -> None:
    """Declare a service's exchange, work queues, bindings, retry ladder and dead-letter queue.

    ``queues`` overrides SERVICE_QUEUES[service] (a queue whose retry ladder comes from settings)."""
    exchange = await declare_exchange(channel, names)
    await declare_dlq(channel, names, service)
    for q in SERVICE_QUEUES.get(service, ()) if queues is None else queues:
        queue = await channel.declare_queue(
            names.queue(q.name), durable=True, arguments=work_queue_args(names, q, delivery_limit, max_length)
        )
        for key in q.bindings:
            await queue.bind(exchange, key)
        for seconds in q.retry_delays:
            await channel.declare_queue(
                names.retry_queue(names.queue(q.name), seconds),
                durable=True,
                arguments=retry_queue_args(names, q, seconds),
            )


def hold_delay_ttl_ms(hold_seconds: int) -> int:
    """The delay message fires a little before the hold expires (at most 1 s, at most half the hold): the
    expiry consumer then waits for the exact moment, so relay and queue latency do not make releases late."""
    hold_ms = hold_seconds * 1000
    return hold_ms - min(1000, hold_ms // 2)


async def declare_hold_delay_queue(channel: AbstractChannel, names: Names, hold_seconds: int) -> str:
    """One delay queue per hold duration: a queue-level TTL keeps FIFO order equal to expiry order."""
    name = names.hold_delay_queue(hold_seconds)
    args = {**hold_delay_args(names), "x-message-ttl": hold_delay_ttl_ms(hold_seconds)}
    await channel.declare_queue(name, durable=True, arguments=args)
    return name


def all_queue_names(names: Names, hold_seconds: tuple[int, ...] = (), extra: tuple[WorkQueue, ...] = ()) -> list[str]:
    """Every queue this deployment may declare (used by tests and `ticketing` ops to clean up).

    ``extra``: queues built from settings (the mailer's configurable ladder), so their retry queues are listed."""
    out: list[str] = []
    for service, queues in SERVICE_QUEUES.items():
        out.append(names.dlq(service))
        for q in (*queues, *extra):
            if q.service != service:
                continue
            out.append(names.queue(q.name))
            out.extend(names.retry_queue(names.queue(q.name), s) for s in q.retry_delays)
    out.extend(names.dlq(service) for service in DLQ_SERVICES)
    out.extend(names.hold_delay_queue(s) for s in hold_seconds)
    return list(dict.fromkeys(out))
