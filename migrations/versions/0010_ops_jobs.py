"""Background jobs of the ops service (long dead-letter replays), run in chunks and resumable, and their
read-only view for the gateway's admin API and console.

Revision ID: 0010_ops_jobs
Revises: 0009_tickets_checkin
"""

from migrations.sql import run_script

revision = "0010_ops_jobs"
down_revision = "0009_tickets_checkin"
branch_labels = None
depends_on = None

UPGRADE = """
-- One row per job. The caller chooses the id (a redelivered command inserts nothing). A runner claims a job by
-- setting lease_until; a job whose lease ran out (its runner died) is claimed again and resumes after
-- cursor (the last dead letter handled). lease_until on a QUEUED job is a back-off (its service was busy).
CREATE TABLE ops.jobs (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('dlq_replay')),
    params       jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'QUEUED' CHECK (status IN ('QUEUED', 'RUNNING', 'DONE', 'FAILED')),
    done         integer NOT NULL DEFAULT 0,
    total        integer,
    affected     integer NOT NULL DEFAULT 0,
    cursor       bigint NOT NULL DEFAULT 0,
    upto         bigint,
    audit_id     bigint,
    actor        text NOT NULL,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz
);
CREATE INDEX jobs_open ON ops.jobs (created_at) WHERE status IN ('QUEUED', 'RUNNING');

CREATE VIEW read_api.ops_jobs AS
    SELECT id, kind, params, status, done, total, affected, audit_id, actor, error, created_at, started_at,
           finished_at, updated_at
      FROM ops.jobs;
"""

DOWNGRADE = """
DROP VIEW IF EXISTS read_api.ops_jobs;
DROP TABLE IF EXISTS ops.jobs;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
