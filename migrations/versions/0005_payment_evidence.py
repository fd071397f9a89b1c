"""Payment evidence: a recorded failure can be contradicted by the provider, and reconciliation checks it.

A result recorded as FAILED is replaced (and the replaced record kept in ``superseded``) when the provider's
genuine result says the money was taken; reconciliation asks the provider about recorded failures until it
agrees (``outcome_confirmed``). The gateway's view shows the recorded outcome, so it never answers "already
confirmed" to a success that must replace a failure.

Revision ID: 0005_payment_evidence
Revises: 0004_payment_ops
"""

from migrations.sql import run_script

revision = "0005_payment_evidence"
down_revision = "0004_payment_ops"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE payment.attempts ADD COLUMN outcome_confirmed boolean NOT NULL DEFAULT false;
CREATE INDEX attempts_failed_unconfirmed ON payment.attempts (expires_at)
    WHERE status = 'FAILED' AND NOT outcome_confirmed;
ALTER TABLE payment.transactions ADD COLUMN superseded jsonb;

CREATE OR REPLACE VIEW read_api.payment_attempts AS
    SELECT a.order_id, a.txn_ref, a.provider, a.attempt, a.status, a.created_at, a.expires_at,
           (t.txn_ref IS NOT NULL) AS recorded, t.outcome AS recorded_outcome
    FROM payment.attempts a
    LEFT JOIN payment.transactions t ON t.provider = a.provider AND t.txn_ref = a.txn_ref;
"""

DOWNGRADE = """
DROP VIEW read_api.payment_attempts;
CREATE VIEW read_api.payment_attempts AS
    SELECT a.order_id, a.txn_ref, a.provider, a.attempt, a.status, a.created_at, a.expires_at,
           (t.txn_ref IS NOT NULL) AS recorded
    FROM payment.attempts a
    LEFT JOIN payment.transactions t ON t.provider = a.provider AND t.txn_ref = a.txn_ref;
ALTER TABLE payment.transactions DROP COLUMN superseded;
DROP INDEX IF EXISTS payment.attempts_failed_unconfirmed;
ALTER TABLE payment.attempts DROP COLUMN outcome_confirmed;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
