"""Drop the inbox tables nothing ever used: consumers are idempotent by their own keys (order id, provider
reference, the mailer's claim), documented in docs/ARCHITECTURE.md, "Idempotent consumption".

Revision ID: 0006_drop_inboxes
Revises: 0005_payment_evidence
"""

from migrations.sql import run_script

revision = "0006_drop_inboxes"
down_revision = "0005_payment_evidence"
branch_labels = None
depends_on = None

UPGRADE = """
DROP TABLE IF EXISTS inventory.inbox;
DROP TABLE IF EXISTS payment.inbox;
"""

DOWNGRADE = """
CREATE TABLE inventory.inbox (
    consumer      text NOT NULL,
    message_id    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE TABLE payment.inbox (
    consumer      text NOT NULL,
    message_id    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
