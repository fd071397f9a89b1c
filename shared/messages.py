"""Message contracts shared by every service (pydantic v2). The routing key of each is in topology."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderStatus(enum.StrEnum):
    REQUESTED = "REQUESTED"
    PENDING = "PENDING"
    PAID = "PAID"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    REFUND_PENDING = "REFUND_PENDING"
    REFUNDED = "REFUNDED"


class RejectReason(enum.StrEnum):
    SOLD_OUT = "sold_out"
    LIMIT_EXCEEDED = "limit_exceeded"
    UNKNOWN_TICKET_TYPE = "unknown_ticket_type"
    INVALID_ORDER = "invalid_order"
    SALES_CLOSED = "sales_closed"
    EVENT_CANCELLED = "event_cancelled"  # the organiser cancelled the event: nothing is sold any more


class EventStatus(enum.StrEnum):
    """An event's status (inventory.events.status, a CHECK in SQL): on sale, being cancelled (its orders are
    cancelled and refunded in batches), or cancelled (inventory's part done; refunds may await the provider)."""

    ON_SALE = "ON_SALE"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class RefundCause(enum.StrEnum):
    """Why an order's money goes back (the buyer's email says so)."""

    LATE_PAYMENT = "late_payment"  # paid after the hold ended and the tickets were gone
    ORGANISER = "organiser"  # the organiser refunded the order
    EVENT_CANCELLED = "event_cancelled"  # the organiser cancelled the event


class ReleaseCause(enum.StrEnum):
    """Who ended a hold (order.cancelled): the buyer, or the cancellation of the event (the buyer is told)."""

    BUYER = "buyer"
    EVENT_CANCELLED = "event_cancelled"


# The one order-size limit: checked at the edge (422), in the messages and by inventory's rules.
MAX_TICKETS_PER_ORDER = 20
Quantity = Annotated[int, Field(ge=1, le=MAX_TICKETS_PER_ORDER)]


class OrderLine(Message):
    ticket_type_id: UUID
    quantity: Quantity


class PricedLine(Message):
    ticket_type_id: UUID
    quantity: int
    unit_price: int  # integer VND


# --- commands -------------------------------------------------------------------------------------


class CheckoutRequested(Message):
    order_id: UUID
    user_id: str = Field(min_length=1, max_length=200)
    user_email: str = Field("", max_length=320)
    locale: str = "vi"
    items: list[OrderLine] = Field(min_length=1, max_length=MAX_TICKETS_PER_ORDER)
    request_hash: str = Field("", max_length=128)


class BatchedCheckout(Message):
    """One checkout of a ``CheckoutBatch``, with the ids its caller needs: ``request_id`` (what its answer in
    ``CheckoutsDecided`` carries) and ``correlation_id`` (its HTTP request's, for the logs and the events)."""

    request_id: str = Field(min_length=1, max_length=64)
    correlation_id: str = Field("", max_length=64)
    checkout: CheckoutRequested


class CheckoutBatch(Message):
    """The checkouts one gateway process had waiting while its previous batch was being confirmed: one
    persistent message for all of them instead of one ``checkout.requested`` each. Inventory decides every
    item as if it had come alone (idempotent per order id) and answers them all in one ``CheckoutsDecided``."""

    checkouts: list[BatchedCheckout] = Field(min_length=1, max_length=1_000)


class CreateEvent(Message):
    event_id: UUID
    title: str = Field(min_length=1, max_length=300)
    venue: str = Field(min_length=1, max_length=300)
    city: str = Field(min_length=1, max_length=100)
    starts_at: datetime
    description: str = Field("", max_length=10_000)
    hold_seconds: int = Field(900, ge=1, le=86_400)
    ticket_types: list[NewTicketType] = Field(default_factory=list, max_length=100)


class NewTicketType(Message):
    ticket_type_id: UUID
    name: str = Field(min_length=1, max_length=200)
    price: int = Field(ge=0, le=1_000_000_000_000)
    capacity: int = Field(ge=0, le=10_000_000)
    per_user_limit: int = Field(10, ge=1, le=10_000)


class AddTicketType(Message):
    event_id: UUID
    ticket_type: NewTicketType


class CancelOrder(Message):
    order_id: UUID
    user_id: str
    is_admin: bool = False


# A ticket's code as issued (``secrets.token_urlsafe``: URL-safe base64) and as a QR scanner reads it.
TICKET_CODE_MAX = 200


class CheckIn(Message):
    """Door staff present a ticket's code at an event's door (command.check_in, request/reply to inventory,
    which owns the tickets): admit it once, or say why not."""

    event_id: UUID
    code: str = Field(min_length=1, max_length=TICKET_CODE_MAX)
    actor: str = Field(min_length=1, max_length=200)  # who scanned: ``user:<sub>`` or ``cli:<name>``


class ResendEmail(Message):
    """A buyer asks for an order's current email again (command.resend_email, to the mailer; no reply). Each
    request has its own ``resend_id``, so the mailer's exactly-once record sends it once and only once."""

    order_id: UUID
    resend_id: UUID
    requested_by: str = Field(min_length=1, max_length=200)


class RefundOrder(Message):
    """An organiser's command (command.refund_order, request/reply): refund a PAID order in full."""

    order_id: UUID
    actor: str = Field(min_length=1, max_length=200)


class CancelEvent(Message):
    """An organiser's command (command.cancel_event, request/reply): stop selling the event at once, cancel its
    PENDING orders and refund its PAID ones (in batches: ContinueEventCancellation)."""

    event_id: UUID
    actor: str = Field(min_length=1, max_length=200)


class ContinueEventCancellation(Message):
    """Inventory to itself (command.continue_event_cancellation, through its outbox): do batch ``batch`` of the
    event's cancellation. A copy whose batch is not the next one is stale (already done) and changes nothing."""

    event_id: UUID
    batch: int = Field(ge=1)


# --- replies (request/reply over a gateway's own reply queue) ---------------------------------------


class OrderView(Message):
    order_id: UUID
    user_id: str
    status: OrderStatus
    total: int
    items: list[PricedLine]
    expires_at: datetime | None = None
    reason: str | None = None
    detail: str | None = None
    created_at: datetime | None = None


class CheckoutOutcome(enum.StrEnum):
    HELD = "held"  # the order is PENDING: its tickets are held until expires_at
    REJECTED = "rejected"  # nothing held; ``order.reason`` says why
    KEY_REUSED = "key_reused"  # this order id (Idempotency-Key) was first used for a different request


class CheckoutDecided(Message):
    """Inventory's answer to CheckoutRequested."""

    outcome: CheckoutOutcome
    order: OrderView
    created: bool  # decided by this command just now (False: a redelivery or a repeated Idempotency-Key)
    # Ticket types of the deciding batch with nothing left, each with the stock version it ran out at: the
    # gateway may answer 409 at once for them until a newer stock.changed says stock is back
    # (docs/ARCHITECTURE.md, "Sold-out gate"). A hint that can only ever reject.
    sold_out_versions: dict[UUID, int] = Field(default_factory=dict)
    # The same without versions, as inventories before migration 0012 answer (read, no longer written).
    sold_out: list[UUID] = Field(default_factory=list)

    def sold_out_at(self) -> dict[UUID, int]:
        """Each sold-out ticket type and the stock version it ran out at (0: not known, an older inventory)."""
        return self.sold_out_versions or dict.fromkeys(self.sold_out, 0)


class CheckoutItemDecided(Message):
    request_id: str  # the ``BatchedCheckout.request_id`` this answers
    decided: CheckoutDecided


class CheckoutsDecided(Message):
    """Inventory's answer to CheckoutBatch: one decision per checkout of the batch, each named by its
    ``request_id``."""

    decisions: list[CheckoutItemDecided] = Field(max_length=1_000)


class CancelOutcome(enum.StrEnum):
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"  # no such order, or not the caller's
    NOT_PENDING = "not_pending"  # only a PENDING order can be cancelled


class CancelAnswered(Message):
    """Inventory's answer to CancelOrder."""

    outcome: CancelOutcome
    order: OrderView | None = None


class RefundOutcome(enum.StrEnum):
    ACCEPTED = "accepted"  # PAID -> REFUND_PENDING now: tickets void, stock back on sale, the provider is asked
    ALREADY = "already"  # already REFUND_PENDING or REFUNDED: a repeat, nothing done twice
    NOT_PAID = "not_paid"  # only a PAID order can be refunded
    NOT_FOUND = "not_found"


class RefundAnswered(Message):
    """Inventory's answer to RefundOrder."""

    outcome: RefundOutcome
    order: OrderView | None = None


class CancellationProgress(Message):
    """An event's status and what its cancellation still has to do (counts of orders)."""

    event_id: UUID
    status: EventStatus
    pending_to_cancel: int = 0  # PENDING orders not cancelled yet
    paid_to_refund: int = 0  # PAID orders not sent to refund yet
    refunds_pending: int = 0  # REFUND_PENDING: the provider has not confirmed yet
    done: int = 0  # orders the cancellation is finished with (cancelled, or refunded and confirmed)
    batches: int = 0


class EventCancelOutcome(enum.StrEnum):
    ACCEPTED = "accepted"  # ON_SALE -> CANCELLING now
    ALREADY = "already"  # already CANCELLING or CANCELLED: a repeat
    NOT_FOUND = "not_found"


class EventCancelAnswered(Message):
    """Inventory's answer to CancelEvent."""

    outcome: EventCancelOutcome
    progress: CancellationProgress | None = None


class CatalogOutcome(enum.StrEnum):
    CREATED = "created"
    ALREADY_EXISTED = "already_existed"  # a repeated create (same event id): nothing changed
    EVENT_NOT_FOUND = "event_not_found"


class CatalogChanged(Message):
    """Inventory's answer to CreateEvent and AddTicketType."""

    outcome: CatalogOutcome
    event_id: UUID


class CheckInOutcome(enum.StrEnum):
    ADMITTED = "admitted"  # this scan admitted the ticket (``admitted_at`` is now)
    ALREADY_ADMITTED = "already_admitted"  # admitted before, at ``admitted_at``
    VOID = "void"  # its order is no longer PAID (refund pending, refunded, cancelled): not valid for entry
    WRONG_EVENT = "wrong_event"  # a real ticket, for another event
    NOT_FOUND = "not_found"  # no ticket has this code


class CheckInAnswered(Message):
    """Inventory's answer to CheckIn."""

    outcome: CheckInOutcome
    ticket_id: UUID | None = None
    ticket_type_id: UUID | None = None
    admitted_at: datetime | None = None
    order_status: OrderStatus | None = None  # for VOID: what the order is now


# --- events ---------------------------------------------------------------------------------------


class OrderHeld(Message):
    order_id: UUID
    user_id: str
    user_email: str
    locale: str
    event_id: UUID
    items: list[PricedLine]
    total: int
    expires_at: datetime


class OrdersHeld(Message):
    """The orders one group-commit batch held: one message for the batch instead of one ``order.held`` per
    order (the payment service registers their first payment attempts in one statement)."""

    orders: list[OrderHeld] = Field(min_length=1, max_length=10_000)


class HoldExpiryDue(Message):
    """The holds placed together (one group-commit batch, one hold duration) are due at ``expires_at``: one
    delay message for the batch, not one per hold. ``order_id`` alone: a single hold (as older senders wrote)."""

    order_id: UUID | None = None
    order_ids: list[UUID] = Field(default_factory=list, max_length=10_000)
    expires_at: datetime

    @model_validator(mode="after")
    def _names_a_hold(self) -> HoldExpiryDue:
        if self.order_id is None and not self.order_ids:
            raise ValueError("names no hold: give order_ids (or order_id)")
        return self

    @property
    def all_order_ids(self) -> list[UUID]:
        return list(dict.fromkeys([*self.order_ids, *([self.order_id] if self.order_id else [])]))


class OrderReleased(Message):
    """A hold is gone and its stock is back: published as one of its two kinds below."""

    order_id: UUID
    user_id: str
    user_email: str = ""
    locale: str = "vi"
    event_id: UUID | None = None
    status: OrderStatus
    items: list[PricedLine]
    cause: ReleaseCause = ReleaseCause.BUYER


class OrderExpired(OrderReleased):
    """order.expired: the hold ran out unpaid."""


class OrderCancelled(OrderReleased):
    """order.cancelled: the buyer (or an operator) cancelled the hold."""


class IssuedTicket(Message):
    """One admission: its code is what the QR image in the ticket email encodes."""

    code: str
    ticket_type_id: UUID
    ticket_type_name: str


class OrderPaid(Message):
    """Published by inventory as order.paid once the hold became a sale (tickets issued)."""

    order_id: UUID
    user_id: str
    user_email: str
    locale: str
    event_id: UUID
    event_title: str
    venue: str
    city: str
    starts_at: datetime
    items: list[PricedLine]
    total: int
    paid_at: datetime
    tickets: list[IssuedTicket]


class RefundNotice(Message):
    """An order's money goes back to the buyer: published as one of its two kinds below."""

    order_id: UUID
    user_id: str
    user_email: str
    locale: str
    event_id: UUID | None = None
    amount: int  # integer VND
    reason: str
    cause: RefundCause = RefundCause.LATE_PAYMENT


class OrderRefundPending(RefundNotice):
    """order.refund_pending: the order must be refunded; the payment service asks the provider."""


class OrderRefunded(RefundNotice):
    """order.refunded: the provider confirmed the refund."""


class StockChanged(Message):
    ticket_type_id: UUID
    event_id: UUID
    capacity: int
    held: int
    sold: int
    # inventory.ticket_types.stock_version after the change: orders the messages of one ticket type, which the
    # outbox may deliver after a newer checkout answer (0: not known, an older inventory).
    stock_version: int = 0


class TicketTypeInfo(Message):
    ticket_type_id: UUID
    name: str
    price: int
    capacity: int
    per_user_limit: int


class EventInfo(Message):
    """The event as it now stands: published as one of its two kinds below."""

    event_id: UUID
    title: str
    venue: str
    city: str
    starts_at: datetime
    description: str
    hold_seconds: int
    ticket_types: list[TicketTypeInfo]


class EventCreated(EventInfo):
    """catalog.event_created"""


class TicketTypeAdded(EventInfo):
    """catalog.ticket_type_added: ``ticket_type_id`` names the one just added."""

    ticket_type_id: UUID


class EventCancelled(Message):
    """catalog.event_cancelled: the event is no longer on sale (search and the homepage stop offering it)."""

    event_id: UUID
    cancelled_at: datetime


# --- payments -----------------------------------------------------------------------------------------


class PaymentNotified(Message):
    """A provider notification whose signature the gateway verified (the payment service verifies again)."""

    provider: str
    params: dict[str, str]
    received_at: datetime


class PaymentSucceeded(Message):
    """Published by the payment service as payment.succeeded: money for the order was taken, once."""

    order_id: UUID
    provider: str
    txn_ref: str
    amount: int  # integer VND
    provider_txn_no: str = ""
    paid_at: datetime


class PaymentRefunded(Message):
    """Published by the payment service as payment.refunded when the provider confirmed the refund."""

    order_id: UUID
    provider: str
    txn_ref: str
    amount: int  # integer VND
    refunded_at: datetime
    detail: str = ""


class PaymentOpAction(enum.StrEnum):
    LIST_REVIEW = "list_review"
    ACCEPT = "accept"
    REJECT = "reject"
    LIST_FAILED_REFUNDS = "list_failed_refunds"
    RETRY_REFUND = "retry_refund"


class PaymentOp(Message):
    """An operator's command to the payment service (command.payment_op, request/reply): who asks what."""

    action: PaymentOpAction
    actor: str = Field(min_length=1, max_length=200)
    target: str = Field("", max_length=64)  # a txn_ref; empty for listings
    limit: int = Field(100, ge=1, le=1000)


class NotificationAnswered(Message):
    """The payment service's answer to PaymentNotified: the code the provider is answered with (VNPAY's RspCode
    meanings: 00 recorded, 01 unknown order, 02 already recorded, 04 wrong amount, 97 not a valid result)."""

    code: str = Field(pattern=r"^[0-9]{2}$")


class PaymentOpOutcome(enum.StrEnum):
    DONE = "done"
    NOT_FOUND = "not_found"
    WRONG_STATE = "wrong_state"  # e.g. accepting an attempt that is not held for review
    PROVIDER_FAILED = "provider_failed"  # the provider refused or failed the refund


class PaymentOpAnswered(Message):
    """The payment service's answer to PaymentOp."""

    outcome: PaymentOpOutcome
    detail: str = ""
    items: list[dict[str, Any]] | None = None  # the rows a listing answers with


# --- dead-letter operations -----------------------------------------------------------------------------


class DlqActionKind(enum.StrEnum):
    REPLAY = "replay"
    PURGE = "purge"


class DlqAction(Message):
    """An operator's command to the ops service (command.dlq_action, request/reply): replay or purge the dead
    letters of one service selected by ids, by group, or all of them."""

    action: DlqActionKind
    service: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(default_factory=list, max_length=10_000)
    group: str | None = Field(None, max_length=64)
    everything: bool = False
    dry_run: bool = False
    rate: float | None = Field(None, gt=0, le=10_000)  # replay: messages per second (None: the setting)
    actor: str = Field(min_length=1, max_length=200)


class DlqActionOutcome(enum.StrEnum):
    DONE = "done"
    UNKNOWN_SERVICE = "unknown_service"
    BUSY = "busy"  # a replay of this service is already running
    INTERRUPTED = "interrupted"  # the replay stopped part way (``result.error`` says why); the rest waits


class DlqActionAnswered(Message):
    """The ops service's answer to DlqAction: the action's result (matched, affected, audit id, a sample)."""

    outcome: DlqActionOutcome
    detail: str = ""
    result: dict[str, Any] = Field(default_factory=dict)


# --- background jobs (owned by the ops service) ----------------------------------------------------------


class JobKind(enum.StrEnum):
    DLQ_REPLAY = "dlq_replay"


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"


class StartJob(Message):
    """An operator's command to the ops service (command.start_job, request/reply): record a background job and
    run it in chunks. ``job_id`` is chosen by the caller, so a redelivered command creates the job once and the
    caller can show (poll) the job before the answer arrives. Kind dlq_replay: replay the dead letters of one
    service selected by ids, by group, or all of them, at ``rate`` per second."""

    job_id: UUID
    kind: JobKind
    service: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(default_factory=list, max_length=10_000)
    group: str | None = Field(None, max_length=64)
    everything: bool = False
    rate: float | None = Field(None, gt=0, le=10_000)  # messages per second (None: the setting)
    actor: str = Field(min_length=1, max_length=200)


class JobOutcome(enum.StrEnum):
    ACCEPTED = "accepted"  # recorded (or already recorded: a redelivery); it runs in the background
    REFUSED = "refused"  # not a valid job (unknown service, bad selection): nothing recorded


class JobAccepted(Message):
    """The ops service's answer to StartJob."""

    outcome: JobOutcome
    job_id: UUID
    status: JobStatus | None = None
    detail: str = ""


CreateEvent.model_rebuild()
