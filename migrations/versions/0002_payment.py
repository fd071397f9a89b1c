"""Payments: the payment service's schema (attempts, provider results, refunds, outbox, inbox, a read-only view)
and inventory's side of a sale (issued tickets, the payment each order was settled with).

Revision ID: 0002_payment
Revises: 0001
"""

from migrations.sql import run_script

revision = "0002_payment"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SCHEMA IF NOT EXISTS payment;

-- One row per payment attempt of an order (attempt 1 when the hold is placed, the next after a failure).
-- created_at is the attempt's vnp_CreateDate, which querydr needs back as vnp_TransactionDate.
CREATE TABLE payment.attempts (
    txn_ref      text PRIMARY KEY,
    provider     text NOT NULL,
    order_id     uuid NOT NULL,
    attempt      integer NOT NULL CHECK (attempt > 0),
    amount       bigint NOT NULL CHECK (amount >= 0),
    status       text NOT NULL CHECK (status IN ('STARTED','SUCCEEDED','FAILED','REVIEW','ABANDONED')),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    queried_at   timestamptz,
    query_count  integer NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, attempt)
);
CREATE INDEX attempts_to_reconcile ON payment.attempts (expires_at) WHERE status = 'STARTED';

-- A provider's result, applied at most once: the primary key is the at-most-once guard for IPN and querydr.
CREATE TABLE payment.transactions (
    provider            text NOT NULL,
    txn_ref             text NOT NULL,
    order_id            uuid NOT NULL,
    amount              bigint NOT NULL,
    outcome             text NOT NULL CHECK (outcome IN ('SUCCEEDED','FAILED','REVIEW')),
    response_code       text NOT NULL,
    transaction_status  text NOT NULL,
    provider_txn_no     text NOT NULL DEFAULT '',
    paid_at             timestamptz,
    source              text NOT NULL CHECK (source IN ('ipn','querydr')),
    params              jsonb NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, txn_ref)
);
CREATE INDEX transactions_order ON payment.transactions (order_id);

-- Refunds of late payments that found no stock: retried until the provider confirms or refuses.
CREATE TABLE payment.refunds (
    order_id      uuid PRIMARY KEY,
    provider      text NOT NULL,
    txn_ref       text NOT NULL,
    amount        bigint NOT NULL,
    reason        text NOT NULL,
    status        text NOT NULL CHECK (status IN ('REQUESTED','CONFIRMED','REFUSED')),
    tries         integer NOT NULL DEFAULT 0,
    last_error    text,
    response      jsonb,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    next_try_at   timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz
);

CREATE TABLE payment.outbox (
    id           bigserial PRIMARY KEY,
    exchange     text NOT NULL,
    routing_key  text NOT NULL,
    message_id   text NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payment.inbox (
    consumer      text NOT NULL,
    message_id    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Read-only for the gateway: which attempt's payment URL to hand out, and whether a result is recorded.
CREATE VIEW read_api.payment_attempts AS
    SELECT a.order_id, a.txn_ref, a.provider, a.attempt, a.status, a.created_at, a.expires_at,
           (t.txn_ref IS NOT NULL) AS recorded
    FROM payment.attempts a
    LEFT JOIN payment.transactions t ON t.provider = a.provider AND t.txn_ref = a.txn_ref;

-- Inventory's side of a sale: one row per admission, with an unguessable code (what the QR encodes).
CREATE TABLE inventory.tickets (
    code            text PRIMARY KEY,
    order_id        uuid NOT NULL REFERENCES inventory.orders(id),
    ticket_type_id  uuid NOT NULL REFERENCES inventory.ticket_types(id),
    seq             integer NOT NULL CHECK (seq > 0),
    issued_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, ticket_type_id, seq)
);

-- The payment an order was settled with (paid, or sent to refund): one per order.
CREATE TABLE inventory.order_payments (
    order_id     uuid PRIMARY KEY REFERENCES inventory.orders(id),
    provider     text NOT NULL,
    txn_ref      text NOT NULL,
    amount       bigint NOT NULL,
    late         boolean NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('PAID','REFUND_PENDING','REFUNDED')),
    paid_at      timestamptz NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS inventory.order_payments;
DROP TABLE IF EXISTS inventory.tickets;
DROP VIEW IF EXISTS read_api.payment_attempts;
DROP SCHEMA IF EXISTS payment CASCADE;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
