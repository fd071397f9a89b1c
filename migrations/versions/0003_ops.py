"""Dead-letter operations: dead letters moved out of every DLQ, and the audit log of replays and purges.

Revision ID: 0003_ops
"""

from migrations.sql import run_script

revision = "0003_ops"
down_revision = "0003_mailer"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SCHEMA IF NOT EXISTS ops;

-- One row per death of a message. A replayed message that fails again is a new row with the same message_id
-- (the history). status: dead (waiting for an operator) | replayed | purged; rows are kept for the audit trail.
CREATE TABLE ops.dead_letters (
    id                  bigserial PRIMARY KEY,
    fingerprint         text NOT NULL UNIQUE,  -- the keeper may store a delivery twice after a crash
    service             text NOT NULL,
    dlq                 text NOT NULL,
    message_id          text NOT NULL,
    original_queue      text NOT NULL,
    original_exchange   text NOT NULL DEFAULT '',
    routing_key         text NOT NULL DEFAULT '',
    reason              text NOT NULL DEFAULT '',
    exception_type      text NOT NULL DEFAULT '',
    group_key           text NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    replay_count        integer NOT NULL DEFAULT 0,
    headers             jsonb NOT NULL,
    properties          jsonb NOT NULL,
    body                bytea NOT NULL,
    failed_at           timestamptz NOT NULL,
    stored_at           timestamptz NOT NULL DEFAULT now(),
    status              text NOT NULL DEFAULT 'dead' CHECK (status IN ('dead', 'replayed', 'purged')),
    resolved_at         timestamptz,
    resolved_by         text,
    action_id           bigint
);
CREATE INDEX dead_letters_waiting ON ops.dead_letters (service, group_key, id) WHERE status = 'dead';
CREATE INDEX dead_letters_message ON ops.dead_letters (message_id);

-- Append-only: who did what, when, to how many. Dry runs are recorded too (dry_run = true).
CREATE TABLE ops.audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL CHECK (action IN ('replay', 'purge')),
    service     text NOT NULL,
    selector    jsonb NOT NULL,
    dry_run     boolean NOT NULL DEFAULT false,
    matched     integer NOT NULL,
    affected    integer NOT NULL,
    detail      text
);
"""

DOWNGRADE = "DROP SCHEMA IF EXISTS ops CASCADE;"


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
