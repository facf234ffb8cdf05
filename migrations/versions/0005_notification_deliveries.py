"""Which channels of a notification were delivered by an attempt that then rolled back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A notification claims its (order, kind) row, sends on each channel, and commits,
in the event's transaction. When a later channel fails (the webhook's receiver
is down), that transaction rolls back and the event is retried; without a
record that outlives the rollback, every retry would mail the customer again.
The handler writes these rows on a connection of its own, committed at once,
and skips the channels listed here on the retry. No foreign key to
``notifications.notifications``: the row it would point to is not committed yet.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Owned by the service's role, like the rest of its schema.
    op.execute("SET LOCAL ROLE notifications")
    op.execute(
        """
        CREATE TABLE notifications.deliveries (
            order_id     text NOT NULL,
            kind         text NOT NULL,
            channel      text NOT NULL,
            delivered_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (order_id, kind, channel)
        )
        """
    )
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS notifications.deliveries")
