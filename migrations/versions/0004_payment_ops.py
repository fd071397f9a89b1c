"""Payment operator actions: decisions on attempts held for review, refunds of rejected ones, an audit log.

Revision ID: 0004_payment_ops
Revises: 0002_payment
"""

from migrations.sql import run_script

revision = "0004_payment_ops"
down_revision = "0002_payment"
branch_labels = None
depends_on = None

UPGRADE = """
-- A REVIEW attempt (VNPAY 07) ends ACCEPTED (applied as a success) or REJECTED (refunded) by an operator.
ALTER TABLE payment.attempts DROP CONSTRAINT attempts_status_check;
ALTER TABLE payment.attempts ADD CONSTRAINT attempts_status_check
    CHECK (status IN ('STARTED','SUCCEEDED','FAILED','REVIEW','ABANDONED','ACCEPTED','REJECTED'));
CREATE INDEX attempts_in_review ON payment.attempts (updated_at) WHERE status = 'REVIEW';

-- The refund of a rejected review. Kept apart from payment.refunds (one per order, confirmed to inventory as
-- payment.refunded): the order of a rejected payment is untouched, so inventory must hear nothing.
-- status: REQUESTED (being asked) | CONFIRMED | FAILED (refused or an error; an operator may retry).
CREATE TABLE payment.review_refunds (
    txn_ref       text PRIMARY KEY REFERENCES payment.attempts(txn_ref),
    provider      text NOT NULL,
    order_id      uuid NOT NULL,
    amount        bigint NOT NULL,
    status        text NOT NULL CHECK (status IN ('REQUESTED','CONFIRMED','FAILED')),
    tries         integer NOT NULL DEFAULT 1,
    detail        text NOT NULL DEFAULT '',
    response      jsonb,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX review_refunds_failed ON payment.review_refunds (updated_at) WHERE status = 'FAILED';

-- Who did what, when, and what came of it (every call, no-ops and refusals included).
CREATE TABLE payment.op_audit (
    id        bigserial PRIMARY KEY,
    actor     text NOT NULL,
    action    text NOT NULL,
    target    text NOT NULL,
    result    text NOT NULL,
    detail    text NOT NULL DEFAULT '',
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX op_audit_target ON payment.op_audit (target, at);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS payment.op_audit;
DROP TABLE IF EXISTS payment.review_refunds;
DROP INDEX IF EXISTS payment.attempts_in_review;
UPDATE payment.attempts SET status = 'REVIEW' WHERE status IN ('ACCEPTED','REJECTED');
ALTER TABLE payment.attempts DROP CONSTRAINT attempts_status_check;
ALTER TABLE payment.attempts ADD CONSTRAINT attempts_status_check
    CHECK (status IN ('STARTED','SUCCEEDED','FAILED','REVIEW','ABANDONED'));
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
