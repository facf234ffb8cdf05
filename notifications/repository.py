"""SQL for the notifications table: one row per order and kind (UNIQUE (order_id, kind))."""

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

    def kinds(self, order_id: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT kind FROM notifications.notifications WHERE order_id = %s", (order_id,)
        ).fetchall()
        return {r[0] for r in rows}
