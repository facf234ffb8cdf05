"""Notifications are sent by effects: each channel's outcome on its row; no deliveries table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

The reaction to an order event claims the (order, kind) row and requests one
effect per channel; the sends happen after its transaction commits, so there is no
rolled-back attempt left whose deliveries must be remembered: ``deliveries`` (0005)
goes. Each channel's outcome is recorded on the row instead (``outcomes``: channel
-> delivered or failed), and ``notified_at`` says when CustomerNotified was emitted.

Rows written before this revision were committed with every channel sent and
CustomerNotified emitted (the old handler did all of it in one transaction): they
are marked so. A ``deliveries`` row left by an attempt still being retried has no
notification row yet; the retry, now an effect, sends that channel once more, with
the same Message-ID or delivery id. A downgrade loses the sends still pending (the
code before it takes a claimed row for a sent one): drain the effects first.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SET LOCAL ROLE notifications")
    op.execute(
        "ALTER TABLE notifications.notifications"
        " ADD COLUMN outcomes jsonb NOT NULL DEFAULT '{}',"
        " ADD COLUMN notified_at timestamptz"
    )
    op.execute(
        "UPDATE notifications.notifications SET notified_at = sent_at,"
        " outcomes = coalesce("
        "   (SELECT jsonb_object_agg(channel, 'delivered') FROM unnest(channels) AS channel),"
        "   '{}')"
    )
    op.execute("DROP TABLE notifications.deliveries")
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute("SET LOCAL ROLE notifications")
    # As 0005 created it; empty: nothing it would hold exists under effects.
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
    op.execute(
        "ALTER TABLE notifications.notifications DROP COLUMN notified_at, DROP COLUMN outcomes"
    )
    op.execute("RESET ROLE")
