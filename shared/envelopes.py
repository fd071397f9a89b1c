"""The envelope of every message, derived from the message alone: its routing key and its message id.

Consumers deduplicate by message id, so an id must be the same wherever the same fact is published (an IPN
and a querydr answer for one payment, an outbox row relayed twice): deriving it here, once per message type,
is what keeps them equal. Routing keys are the message types (one key per type, see ``shared.topology``).
"""

from __future__ import annotations

import hashlib
import uuid

from shared import topology
from shared.messages import (
    AddTicketType,
    CancelEvent,
    CancelOrder,
    CheckIn,
    CheckoutBatch,
    CheckoutRequested,
    ContinueEventCancellation,
    CreateEvent,
    DlqAction,
    EventCancelled,
    EventCreated,
    HoldExpiryDue,
    Message,
    OrderCancelled,
    OrderExpired,
    OrderHeld,
    OrderPaid,
    OrderRefunded,
    OrderRefundPending,
    OrdersHeld,
    PaymentNotified,
    PaymentOp,
    PaymentRefunded,
    PaymentSucceeded,
    RefundOrder,
    ResendEmail,
    StartJob,
    StockChanged,
    TicketTypeAdded,
)

ROUTING_KEYS: dict[type[Message], str] = {
    CheckoutRequested: topology.CHECKOUT_REQUESTED,
    CheckoutBatch: topology.CHECKOUT_BATCH,
    CancelOrder: topology.CANCEL_ORDER,
    CheckIn: topology.CHECK_IN,
    ResendEmail: topology.RESEND_EMAIL,
    RefundOrder: topology.REFUND_ORDER,
    CancelEvent: topology.CANCEL_EVENT,
    ContinueEventCancellation: topology.CONTINUE_EVENT_CANCELLATION,
    EventCancelled: topology.EVENT_CANCELLED,
    CreateEvent: topology.CREATE_EVENT,
    AddTicketType: topology.ADD_TICKET_TYPE,
    OrderHeld: topology.ORDER_HELD,
    OrdersHeld: topology.ORDERS_HELD,
    HoldExpiryDue: topology.HOLD_EXPIRY_DUE,
    OrderExpired: topology.ORDER_EXPIRED,
    OrderCancelled: topology.ORDER_CANCELLED,
    OrderPaid: topology.ORDER_PAID,
    OrderRefundPending: topology.ORDER_REFUND_PENDING,
    OrderRefunded: topology.ORDER_REFUNDED,
    StockChanged: topology.STOCK_CHANGED,
    EventCreated: topology.EVENT_CREATED,
    TicketTypeAdded: topology.TICKET_TYPE_ADDED,
    PaymentNotified: topology.PAYMENT_NOTIFIED,
    PaymentSucceeded: topology.PAYMENT_SUCCEEDED,
    PaymentRefunded: topology.PAYMENT_REFUNDED,
    PaymentOp: topology.PAYMENT_OP,
    DlqAction: topology.DLQ_ACTION,
    StartJob: topology.START_JOB,
}


def routing_key(msg: Message) -> str:
    try:
        return ROUTING_KEYS[type(msg)]
    except KeyError:
        raise TypeError(f"{type(msg).__name__} has no routing key: add it to shared.envelopes") from None


def message_id(msg: Message) -> str:
    """The id consumers deduplicate by: one per fact (a fact published twice gets the same id)."""
    match msg:
        # Facts about an order: at most one of each kind per order.
        case CheckoutRequested():
            return f"checkout:{msg.order_id}"
        # A batch: named by its first order and a digest of all of them, in order (a repeated Idempotency-Key
        # can put one order id first in two batches; the same batch published twice keeps its id).
        case CheckoutBatch():
            orders = [str(item.checkout.order_id) for item in msg.checkouts]
            digest = hashlib.sha256(",".join(orders).encode()).hexdigest()[:16]
            return f"checkouts:{orders[0]}+{len(orders) - 1}:{digest}"
        case OrderHeld():
            return f"held:{msg.order_id}"
        case OrdersHeld():  # a batch: named by its first order, which no other batch can hold
            first, more = msg.orders[0].order_id, len(msg.orders) - 1
            return f"held:{first}" if not more else f"held:{first}+{more}"
        case HoldExpiryDue():
            ids = msg.all_order_ids
            return f"expiry:{ids[0]}" if len(ids) == 1 else f"expiry:{ids[0]}+{len(ids) - 1}"
        case OrderExpired():
            return f"expired:{msg.order_id}"
        case OrderCancelled():
            return f"cancelled:{msg.order_id}"
        case OrderPaid():
            return f"paid:{msg.order_id}"
        case OrderRefundPending():
            return f"refund-pending:{msg.order_id}"
        case OrderRefunded():
            return f"refunded:{msg.order_id}"
        # Facts about a payment: one per provider reference.
        case PaymentSucceeded():
            return f"payment-succeeded:{msg.provider}:{msg.txn_ref}"
        case PaymentRefunded():
            return f"payment-refunded:{msg.provider}:{msg.txn_ref}"
        # Catalog facts.
        case EventCreated():
            return f"event-created:{msg.event_id}"
        case TicketTypeAdded():
            return f"ticket-type-added:{msg.ticket_type_id}"
        case CreateEvent():
            return f"create-event:{msg.event_id}"
        case AddTicketType():
            return f"add-ticket-type:{msg.ticket_type.ticket_type_id}"
        case EventCancelled():
            return f"event-cancelled:{msg.event_id}"
        # One per batch of a cancellation: a copy relayed twice, or the start-up resume's, carries the same id.
        case ContinueEventCancellation():
            return f"cancel-event:{msg.event_id}:batch-{msg.batch}"
        # Organiser commands are idempotent on their target (a repeat is answered "already").
        case RefundOrder():
            return f"refund-order:{msg.order_id}:{uuid.uuid4().hex}"
        case CancelEvent():
            return f"cancel-event:{msg.event_id}:{uuid.uuid4().hex}"
        # Every stock level is news (consumers keep the latest), and every request is its own.
        # A deliberate resend is a fact of its own (its request's id): the mailer must not take it for the
        # order's first email, nor a redelivery of it for a second resend.
        case ResendEmail():
            return f"resend-email:{msg.order_id}:{msg.resend_id}"
        case StockChanged():
            return f"stock:{msg.ticket_type_id}:{uuid.uuid4().hex}"
        case CancelOrder():
            return f"cancel:{msg.order_id}:{uuid.uuid4().hex}"
        case CheckIn():
            return f"check-in:{msg.event_id}:{uuid.uuid4().hex}"
        case PaymentNotified():
            return f"notified:{msg.provider}:{uuid.uuid4().hex}"
        case PaymentOp():
            return f"payment-op:{uuid.uuid4().hex}"
        case DlqAction():
            return f"dlq-action:{uuid.uuid4().hex}"
        # A job is created once however often its command is delivered: the id the caller chose.
        case StartJob():
            return f"start-job:{msg.job_id}"
    raise TypeError(f"{type(msg).__name__} has no message id rule: add it to shared.envelopes")


def reply_id(request_message_id: str | None) -> str:
    """The id of the answer to a request: derived from the request's, so a redelivered request's answer is
    recognisably the same answer."""
    return f"reply:{request_message_id}"
