"""Organiser actions: event status and cancellation progress, refunds of paid orders, void tickets,
the sales report and the accounting export as read_api views, and the mailer's event-cancelled email.

Revision ID: 0011_organiser
Revises: 0010_ops_jobs
"""

from migrations.sql import run_script

revision = "0011_organiser"
down_revision = "0010_ops_jobs"
branch_labels = None
depends_on = None

UPGRADE = """
-- An event's status (services/inventory/domain.py, EventStatus): ON_SALE -> CANCELLING -> CANCELLED. The
-- cancellation's progress is durable here: batches done, orders it cancelled and sent to refund.
ALTER TABLE inventory.events
    ADD COLUMN status text NOT NULL DEFAULT 'ON_SALE'
        CONSTRAINT events_status CHECK (status IN ('ON_SALE', 'CANCELLING', 'CANCELLED')),
    ADD COLUMN cancel_requested_at timestamptz,
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN cancelled_by text,
    ADD COLUMN cancel_batches integer NOT NULL DEFAULT 0 CHECK (cancel_batches >= 0),
    ADD COLUMN orders_cancelled integer NOT NULL DEFAULT 0 CHECK (orders_cancelled >= 0),
    ADD COLUMN orders_sent_to_refund integer NOT NULL DEFAULT 0 CHECK (orders_sent_to_refund >= 0);
CREATE INDEX events_cancelling ON inventory.events (updated_at) WHERE status = 'CANCELLING';

-- A cancellation walks an event's PENDING and PAID orders in id order, a batch at a time.
CREATE INDEX orders_event_status ON inventory.orders (event_id, status, id);

-- A refunded order's tickets are void (admitted_at, the check-in's column, is migration 0009's).
ALTER TABLE inventory.tickets ADD COLUMN voided_at timestamptz;
CREATE INDEX IF NOT EXISTS tickets_order ON inventory.tickets (order_id);

-- Who asked for an order's refund, and when the refund was requested and confirmed.
ALTER TABLE inventory.order_payments
    ADD COLUMN refund_requested_at timestamptz,
    ADD COLUMN refunded_at timestamptz,
    ADD COLUMN refund_cause text CHECK (refund_cause IN ('organiser', 'event_cancelled')),
    ADD COLUMN refund_requested_by text;

-- The mailer tells the buyers of a cancelled event whose hold it released.
ALTER TABLE mailer.emails DROP CONSTRAINT IF EXISTS emails_kind_check;
ALTER TABLE mailer.emails ADD CONSTRAINT emails_kind_check
    CHECK (kind IN ('paid', 'expired', 'refunded', 'cancelled'));

-- read_api.events gains the status (a new last column: CREATE OR REPLACE keeps the others).
CREATE OR REPLACE VIEW read_api.events AS
    SELECT id, title, venue, city, starts_at, description, hold_seconds, created_at, updated_at, status
    FROM inventory.events;

-- What search and the homepage offer: events on sale only.
CREATE VIEW read_api.searchable_events AS
    SELECT id, title, venue, city, starts_at, description, hold_seconds, created_at, updated_at
    FROM inventory.events WHERE status = 'ON_SALE';

-- An event as its organiser sees it, with the cancellation's progress (live counts by the orders' index).
CREATE VIEW read_api.event_admin AS
    SELECT e.id, e.title, e.venue, e.city, e.starts_at, e.status, e.cancel_requested_at, e.cancelled_at,
           e.cancelled_by, e.cancel_batches, e.orders_cancelled, e.orders_sent_to_refund,
           (SELECT count(*) FROM inventory.orders o WHERE o.event_id = e.id AND o.status = 'PENDING')
               AS pending_orders,
           (SELECT count(*) FROM inventory.orders o WHERE o.event_id = e.id AND o.status = 'PAID') AS paid_orders,
           (SELECT count(*) FROM inventory.orders o WHERE o.event_id = e.id AND o.status = 'REFUND_PENDING')
               AS refund_pending_orders,
           (SELECT count(*) FROM inventory.orders o WHERE o.event_id = e.id AND o.status = 'REFUNDED')
               AS refunded_orders
    FROM inventory.events e;

-- The sales report, per ticket type: tickets refunded (orders REFUND_PENDING or REFUNDED that had been paid),
-- admitted (checked in, not void) and revenue (integer VND of the orders still PAID).
CREATE VIEW read_api.ticket_type_sales AS
    SELECT t.id AS ticket_type_id, t.event_id, t.name, t.price, t.capacity, t.held, t.sold,
           t.capacity - t.held - t.sold AS available,
           COALESCE(s.refunded, 0) AS refunded, COALESCE(s.revenue, 0) AS revenue, COALESCE(k.admitted, 0) AS admitted
    FROM inventory.ticket_types t
    LEFT JOIN LATERAL (
        SELECT sum(i.quantity) FILTER (WHERE o.status IN ('REFUND_PENDING', 'REFUNDED') AND p.order_id IS NOT NULL)
                   AS refunded,
               sum(i.quantity * i.unit_price) FILTER (WHERE o.status = 'PAID') AS revenue
        FROM inventory.order_items i JOIN inventory.orders o ON o.id = i.order_id
        LEFT JOIN inventory.order_payments p ON p.order_id = o.id
        WHERE i.ticket_type_id = t.id
    ) s ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS admitted FROM inventory.tickets k
        WHERE k.ticket_type_id = t.id AND k.admitted_at IS NOT NULL AND k.voided_at IS NULL
    ) k ON true;

-- The accounting export: one row per order line of an event, with the payment and the refund.
CREATE VIEW read_api.order_ledger AS
    SELECT o.id AS order_id, o.event_id, o.created_at, o.status, o.user_id, o.user_email,
           i.ticket_type_id, t.name AS ticket_type_name, i.quantity, i.unit_price,
           i.quantity * i.unit_price AS line_total, o.total AS order_total,
           p.paid_at, p.refund_requested_at, p.refunded_at, p.provider, p.txn_ref
    FROM inventory.orders o
    JOIN inventory.order_items i ON i.order_id = o.id
    JOIN inventory.ticket_types t ON t.id = i.ticket_type_id
    LEFT JOIN inventory.order_payments p ON p.order_id = o.id;
"""

DOWNGRADE = """
DROP VIEW IF EXISTS read_api.order_ledger;
DROP VIEW IF EXISTS read_api.ticket_type_sales;
DROP VIEW IF EXISTS read_api.event_admin;
DROP VIEW IF EXISTS read_api.searchable_events;
DROP VIEW IF EXISTS read_api.events;
CREATE VIEW read_api.events AS
    SELECT id, title, venue, city, starts_at, description, hold_seconds, created_at, updated_at
    FROM inventory.events;
ALTER TABLE mailer.emails DROP CONSTRAINT IF EXISTS emails_kind_check;
ALTER TABLE mailer.emails ADD CONSTRAINT emails_kind_check CHECK (kind IN ('paid', 'expired', 'refunded'));
ALTER TABLE inventory.order_payments DROP COLUMN refund_requested_at, DROP COLUMN refunded_at,
    DROP COLUMN refund_cause, DROP COLUMN refund_requested_by;
ALTER TABLE inventory.tickets DROP COLUMN IF EXISTS voided_at;
DROP INDEX IF EXISTS inventory.orders_event_status;
DROP INDEX IF EXISTS inventory.events_cancelling;
ALTER TABLE inventory.events DROP COLUMN status, DROP COLUMN cancel_requested_at, DROP COLUMN cancelled_at,
    DROP COLUMN cancelled_by, DROP COLUMN cancel_batches, DROP COLUMN orders_cancelled,
    DROP COLUMN orders_sent_to_refund;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
