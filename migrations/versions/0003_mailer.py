"""Mailer: the record of every email sent (one row per order and kind: the exactly-once guard).

Revision ID: 0003_mailer
"""

from migrations.sql import run_script

revision = "0003_mailer"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SCHEMA IF NOT EXISTS mailer;

-- One row per (order, kind). status: sending (claimed by a worker, lease in claimed_at) | failed (the last
-- attempt failed; another may claim it) | sent (the SMTP server accepted it: never send again).
CREATE TABLE mailer.emails (
    order_id            uuid NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('paid', 'expired', 'refunded')),
    status              text NOT NULL CHECK (status IN ('sending', 'failed', 'sent')),
    recipient           text NOT NULL,
    locale              text NOT NULL,
    subject             text NOT NULL DEFAULT '',
    message_id          text NOT NULL,
    email_message_id    text NOT NULL DEFAULT '',
    attempts            integer NOT NULL DEFAULT 1,
    duplicates_skipped  integer NOT NULL DEFAULT 0,
    last_error          text,
    smtp_response       text,
    claimed_at          timestamptz,
    sent_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, kind)
);
CREATE INDEX emails_recent ON mailer.emails (created_at DESC);
"""

DOWNGRADE = "DROP SCHEMA IF EXISTS mailer CASCADE;"


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
