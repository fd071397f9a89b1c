"""A ticket type's stock version: a counter that moves with every change of its held and sold counters, so
that a reader of ``stock.changed`` messages (the gateway's sold-out gate) can tell an older message from a
newer answer, whatever order they arrive in.

Revision ID: 0012_stock_version
Revises: 0011_organiser
"""

from migrations.sql import run_script

revision = "0012_stock_version"
down_revision = "0011_organiser"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE inventory.ticket_types ADD COLUMN stock_version bigint NOT NULL DEFAULT 0 CHECK (stock_version >= 0);
"""

DOWNGRADE = """
ALTER TABLE inventory.ticket_types DROP COLUMN stock_version;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
