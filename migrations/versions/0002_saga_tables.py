"""The services' own state: orders and their timeline, stock, payments, shipments, notifications.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = {
    "orders": [
        """
        CREATE TABLE orders.orders (
            id               text PRIMARY KEY,
            customer_id      text NOT NULL,
            email            text NOT NULL,
            status           text NOT NULL
                             CHECK (status IN ('PENDING', 'APPROVED', 'SHIPPED', 'CANCELLED')),
            reason_code      text,
            reason           text,
            lines            jsonb NOT NULL,
            priced_lines     jsonb,
            total_cents      bigint,
            card_token       text NOT NULL,
            shipping_address jsonb NOT NULL,
            idempotency_key  text UNIQUE,
            request_hash     text,
            correlation_id   uuid NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now()
        )
        """,
        "CREATE INDEX orders_customer_idx ON orders.orders (customer_id, created_at DESC, id)",
        "CREATE INDEX orders_pending_idx ON orders.orders (created_at) WHERE status = 'PENDING'",
        """
        CREATE TABLE orders.timeline (
            event_id    uuid PRIMARY KEY,
            order_id    text NOT NULL,
            event_type  text NOT NULL,
            producer    text NOT NULL,
            occurred_at timestamptz NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
        """,
        "CREATE INDEX timeline_order_idx ON orders.timeline (order_id, occurred_at)",
    ],
    "stock": [
        """
        CREATE TABLE stock.products (
            sku         text PRIMARY KEY,
            name        text NOT NULL,
            price_cents bigint NOT NULL CHECK (price_cents >= 0),
            on_hand     integer NOT NULL CHECK (on_hand >= 0),
            reserved    integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
            sold        integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
            restocked   integer NOT NULL DEFAULT 0 CHECK (restocked >= 0),
            received    integer NOT NULL DEFAULT 0,
            updated_at  timestamptz NOT NULL DEFAULT now()
        )
        """,
        """
        CREATE TABLE stock.reservations (
            order_id    text PRIMARY KEY,
            status      text NOT NULL
                        CHECK (status IN ('reserved', 'sold', 'released', 'restocked',
                                          'failed', 'voided')),
            lines       jsonb NOT NULL DEFAULT '[]',
            total_cents bigint,
            reason      text,
            updated_at  timestamptz NOT NULL DEFAULT now()
        )
        """,
    ],
    "payments": [
        """
        CREATE TABLE payments.payments (
            order_id       text PRIMARY KEY,
            card_token     text,
            amount_cents   bigint,
            status         text NOT NULL
                           CHECK (status IN ('awaiting', 'charged', 'failed', 'refunded',
                                             'voided')),
            cancelled      boolean NOT NULL DEFAULT false,
            charge_id      text,
            refund_id      text,
            failure_code   text
                           CHECK (failure_code IN ('payment_declined', 'insufficient_funds',
                                                   'payment_provider_error')),
            failure_reason text,
            updated_at     timestamptz NOT NULL DEFAULT now()
        )
        """,
    ],
    "shipments": [
        """
        CREATE TABLE shipments.shipments (
            order_id           text PRIMARY KEY,
            status             text NOT NULL
                               CHECK (status IN ('scheduled', 'failed', 'cancelled', 'voided')),
            shipment_id        text,
            carrier            text,
            estimated_delivery date,
            reason             text,
            updated_at         timestamptz NOT NULL DEFAULT now()
        )
        """,
    ],
    "notifications": [
        """
        CREATE TABLE notifications.notifications (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            order_id   text NOT NULL,
            kind       text NOT NULL,
            recipient  text NOT NULL,
            subject    text NOT NULL,
            channels   text[] NOT NULL DEFAULT '{}',
            sent_at    timestamptz NOT NULL DEFAULT now(),
            UNIQUE (order_id, kind)
        )
        """,
    ],
}


def upgrade() -> None:
    for service, statements in TABLES.items():
        # Owned by the service's role, like its runtime tables.
        op.execute(f"SET LOCAL ROLE {service}")
        for statement in statements:
            op.execute(statement)
        op.execute("RESET ROLE")


def downgrade() -> None:
    for table in (
        "notifications.notifications",
        "shipments.shipments",
        "payments.payments",
        "stock.reservations",
        "stock.products",
        "orders.timeline",
        "orders.orders",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
