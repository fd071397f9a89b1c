"""Buyers and door staff: tickets get an id and an admission time; the views the gateway and the mailer read
for a buyer's orders, tickets and check-ins; resent emails get their own row in the mailer's record.

Revision ID: 0009_tickets_checkin
Revises: 0008_payment_names
"""

from migrations.sql import run_script

revision = "0009_tickets_checkin"
down_revision = "0008_payment_names"
branch_labels = None
depends_on = ("0002_payment", "0003_mailer")  # inventory.tickets, mailer.emails

UPGRADE = """
-- A ticket's public id (the code stays its key and its secret) and its admission at the door: set once, by
-- inventory's check-in (UPDATE ... WHERE admitted_at IS NULL), never cleared.
ALTER TABLE inventory.tickets ADD COLUMN id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE inventory.tickets ADD CONSTRAINT tickets_id_unique UNIQUE (id);
ALTER TABLE inventory.tickets ADD COLUMN admitted_at timestamptz;
ALTER TABLE inventory.tickets ADD COLUMN admitted_by text;
ALTER TABLE inventory.tickets ADD CONSTRAINT tickets_admitted_by_whom
    CHECK ((admitted_at IS NULL) = (admitted_by IS NULL));
CREATE INDEX tickets_admitted ON inventory.tickets (ticket_type_id, admitted_at DESC) WHERE admitted_at IS NOT NULL;

-- GET /orders pages a buyer's orders newest first by (created_at, id): one batch shares its created_at.
CREATE INDEX orders_user_keyset ON inventory.orders (user_id, created_at DESC, id DESC);

CREATE VIEW read_api.tickets AS
    SELECT t.id AS ticket_id, t.code, t.order_id, t.ticket_type_id, tt.name AS ticket_type_name, tt.event_id,
           o.user_id, t.seq, t.issued_at, t.admitted_at
    FROM inventory.tickets t
    JOIN inventory.ticket_types tt ON tt.id = t.ticket_type_id
    JOIN inventory.orders o ON o.id = t.order_id;

-- What an order's email is addressed with and says (the mailer rebuilds an email it is asked to resend).
CREATE VIEW read_api.order_contacts AS
    SELECT o.id AS order_id, o.user_id, o.user_email, o.locale, o.status, o.event_id, o.total,
           p.amount AS paid_amount, p.paid_at
    FROM inventory.orders o
    LEFT JOIN inventory.order_payments p ON p.order_id = o.id;

-- One row per (order, kind) for the email an event caused (resend_id ''), and one per deliberate resend.
ALTER TABLE mailer.emails ADD COLUMN resend_id text NOT NULL DEFAULT '';
ALTER TABLE mailer.emails DROP CONSTRAINT emails_pkey;
ALTER TABLE mailer.emails ADD PRIMARY KEY (order_id, kind, resend_id);
"""

DOWNGRADE = """
DELETE FROM mailer.emails WHERE resend_id <> '';
ALTER TABLE mailer.emails DROP CONSTRAINT emails_pkey;
ALTER TABLE mailer.emails ADD PRIMARY KEY (order_id, kind);
ALTER TABLE mailer.emails DROP COLUMN resend_id;
DROP VIEW IF EXISTS read_api.order_contacts;
DROP VIEW IF EXISTS read_api.tickets;
DROP INDEX IF EXISTS inventory.orders_user_keyset;
DROP INDEX IF EXISTS inventory.tickets_admitted;
ALTER TABLE inventory.tickets DROP CONSTRAINT tickets_admitted_by_whom;
ALTER TABLE inventory.tickets DROP COLUMN admitted_by;
ALTER TABLE inventory.tickets DROP COLUMN admitted_at;
ALTER TABLE inventory.tickets DROP CONSTRAINT tickets_id_unique;
ALTER TABLE inventory.tickets DROP COLUMN id;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
