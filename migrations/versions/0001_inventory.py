"""Inventory: catalog, stock, orders, holds; its outbox and inbox; the read-only views the gateway reads.

Revision ID: 0001
"""

from migrations.sql import run_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SCHEMA IF NOT EXISTS inventory;

CREATE TABLE inventory.events (
    id            uuid PRIMARY KEY,
    title         text NOT NULL,
    venue         text NOT NULL,
    city          text NOT NULL,
    starts_at     timestamptz NOT NULL,
    description   text NOT NULL DEFAULT '',
    hold_seconds  integer NOT NULL CHECK (hold_seconds > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_starts_at ON inventory.events (starts_at);

-- held and sold are counters guarded by one conditional UPDATE; the CHECK is the last line of defence.
CREATE TABLE inventory.ticket_types (
    id              uuid PRIMARY KEY,
    event_id        uuid NOT NULL REFERENCES inventory.events(id),
    name            text NOT NULL,
    price           bigint NOT NULL CHECK (price >= 0),
    capacity        integer NOT NULL CHECK (capacity >= 0),
    per_user_limit  integer NOT NULL CHECK (per_user_limit > 0),
    held            integer NOT NULL DEFAULT 0 CHECK (held >= 0),
    sold            integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT no_oversell CHECK (sold + held <= capacity)
);
CREATE INDEX ticket_types_event ON inventory.ticket_types (event_id);

CREATE TABLE inventory.orders (
    id            uuid PRIMARY KEY,
    user_id       text NOT NULL,
    user_email    text NOT NULL DEFAULT '',
    locale        text NOT NULL DEFAULT 'vi',
    event_id      uuid,
    status        text NOT NULL CHECK (status IN
                    ('PENDING','PAID','REJECTED','EXPIRED','CANCELLED','REFUND_PENDING','REFUNDED')),
    total         bigint NOT NULL DEFAULT 0,
    reason        text,
    detail        text,
    request_hash  text NOT NULL DEFAULT '',
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_user ON inventory.orders (user_id, created_at DESC);
CREATE INDEX orders_pending_expiry ON inventory.orders (expires_at) WHERE status = 'PENDING';

CREATE TABLE inventory.order_items (
    order_id        uuid NOT NULL REFERENCES inventory.orders(id),
    ticket_type_id  uuid NOT NULL REFERENCES inventory.ticket_types(id),
    quantity        integer NOT NULL CHECK (quantity > 0),
    unit_price      bigint NOT NULL,
    PRIMARY KEY (order_id, ticket_type_id)
);
CREATE INDEX order_items_ticket_type ON inventory.order_items (ticket_type_id);

-- What each buyer holds or bought per ticket type: the per-user limit is checked against it.
CREATE TABLE inventory.user_holdings (
    user_id         text NOT NULL,
    ticket_type_id  uuid NOT NULL REFERENCES inventory.ticket_types(id),
    quantity        integer NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (user_id, ticket_type_id)
);

CREATE TABLE inventory.outbox (
    id           bigserial PRIMARY KEY,
    exchange     text NOT NULL,
    routing_key  text NOT NULL,
    message_id   text NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inventory.inbox (
    consumer      text NOT NULL,
    message_id    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- The documented read-only boundary: the gateway reads these views, never the tables.
CREATE SCHEMA IF NOT EXISTS read_api;

CREATE VIEW read_api.events AS
    SELECT id, title, venue, city, starts_at, description, hold_seconds, created_at, updated_at
    FROM inventory.events;

CREATE VIEW read_api.ticket_types AS
    SELECT id, event_id, name, price, capacity, per_user_limit, held, sold,
           capacity - held - sold AS available
    FROM inventory.ticket_types;

CREATE VIEW read_api.orders AS
    SELECT o.id, o.user_id, o.status, o.total, o.reason, o.detail, o.request_hash, o.expires_at,
           o.created_at, o.updated_at, o.event_id,
           COALESCE((SELECT json_agg(json_build_object(
                        'ticket_type_id', i.ticket_type_id, 'quantity', i.quantity, 'unit_price', i.unit_price)
                        ORDER BY i.ticket_type_id)
                     FROM inventory.order_items i WHERE i.order_id = o.id), '[]'::json) AS items
    FROM inventory.orders o;
"""

DOWNGRADE = """
DROP SCHEMA IF EXISTS read_api CASCADE;
DROP SCHEMA IF EXISTS inventory CASCADE;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
