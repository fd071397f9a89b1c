"""Read-only views of the ops service's dead letters and audit log, for the gateway's admin API and the console
(the ops service is their only writer; replays and purges go to it as commands).

Revision ID: 0007_dead_letter_views
Revises: 0006_drop_inboxes
"""

from migrations.sql import run_script

revision = "0007_dead_letter_views"
down_revision = "0006_drop_inboxes"
branch_labels = None
depends_on = "0003_ops"  # the tables it shows

UPGRADE = """
CREATE VIEW read_api.dead_letters AS SELECT * FROM ops.dead_letters;
CREATE VIEW read_api.dlq_audit AS SELECT * FROM ops.audit_log;
"""

DOWNGRADE = """
DROP VIEW IF EXISTS read_api.dlq_audit;
DROP VIEW IF EXISTS read_api.dead_letters;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
