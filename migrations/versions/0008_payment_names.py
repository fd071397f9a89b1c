"""One name per concept in the payment schema: the audit log is ``audit_log`` (as in ``ops``), and a refund
that needs an operator is FAILED in both refund tables (``payment.refunds`` said REFUSED).

Revision ID: 0008_payment_names
Revises: 0007_dead_letter_views
"""

from migrations.sql import run_script

revision = "0008_payment_names"
down_revision = "0007_dead_letter_views"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE payment.op_audit RENAME TO audit_log;
ALTER INDEX payment.op_audit_target RENAME TO audit_log_target;
ALTER SEQUENCE payment.op_audit_id_seq RENAME TO audit_log_id_seq;

ALTER TABLE payment.refunds DROP CONSTRAINT refunds_status_check;
UPDATE payment.refunds SET status = 'FAILED' WHERE status = 'REFUSED';
ALTER TABLE payment.refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('REQUESTED','CONFIRMED','FAILED'));
"""

DOWNGRADE = """
ALTER TABLE payment.refunds DROP CONSTRAINT refunds_status_check;
UPDATE payment.refunds SET status = 'REFUSED' WHERE status = 'FAILED';
ALTER TABLE payment.refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('REQUESTED','CONFIRMED','REFUSED'));

ALTER SEQUENCE payment.audit_log_id_seq RENAME TO op_audit_id_seq;
ALTER INDEX payment.audit_log_target RENAME TO op_audit_target;
ALTER TABLE payment.audit_log RENAME TO op_audit;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
