"""SQL for the notifications tables.

``notifications``: one row per order and kind (UNIQUE (order_id, kind)), claimed
in the event's transaction. ``deliveries``: the channels an attempt delivered
before a later channel failed and rolled that transaction back; written outside
it, so that the retry skips them.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from notifications.domain import Notification


class NotificationRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def claim(self, notification: Notification, channels: Sequence[str]) -> bool:
        """Insert the (order, kind) row; False when it exists, i.e. it was already sent.

        Runs in the handler's transaction: if sending fails, the row rolls back
        with it and the retry claims it again.
        """
        row = self.conn.execute(
            "INSERT INTO notifications.notifications (order_id, kind, recipient, subject, channels)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (order_id, kind) DO NOTHING RETURNING id",
            (
                notification.order_id,
                notification.kind,
                notification.recipient,
                notification.subject,
                list(channels),
            ),
        ).fetchone()
        return row is not None

    def delivered(self, notification: Notification) -> set[str]:
        """The channels already delivered for the notification's order and kind."""
        rows = self.conn.execute(
            "SELECT channel FROM notifications.deliveries WHERE order_id = %s AND kind = %s",
            (notification.order_id, notification.kind),
        ).fetchall()
        return {r[0] for r in rows}

    def record_delivered(self, notification: Notification, channels: Sequence[str]) -> None:
        """Record ``channels`` as delivered for the notification's order and kind.

        Meant for a connection of its own in autocommit mode: the handler's
        transaction is about to roll back, and this record must outlive it.
        """
        self.conn.execute(
            "INSERT INTO notifications.deliveries (order_id, kind, channel)"
            " SELECT %s, %s, unnest(%s::text[])"
            " ON CONFLICT (order_id, kind, channel) DO NOTHING",
            (notification.order_id, notification.kind, list(channels)),
        )

    def kinds(self, order_id: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT kind FROM notifications.notifications WHERE order_id = %s", (order_id,)
        ).fetchall()
        return {r[0] for r in rows}
