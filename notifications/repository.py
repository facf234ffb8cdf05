"""SQL for the notifications table: one row per order and kind (UNIQUE (order_id, kind)).

The row is claimed in the event's transaction, with the channels to send on, and the
same transaction requests one effect per channel. Each channel's outcome is recorded
on the row (``outcomes``: channel -> delivered or failed) by the decision about its
effect; ``notified_at`` is when CustomerNotified was emitted (NULL: not yet).
``sent_at`` is when the row was claimed, i.e. when sending was decided.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.types.json import Jsonb

from contracts.notifications import NotificationKind
from notifications.domain import ChannelOutcome, Delivery, Notification


class NotificationRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def claim(self, notification: Notification, channels: Sequence[str]) -> bool:
        """Insert the (order, kind) row; False when it exists (it was decided already)."""
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

    def delivery(self, order_id: str, kind: NotificationKind) -> Delivery | None:
        """Where the (order, kind) notification stands; None if it was never claimed.

        The caller holds the order's lock, so nobody changes the row meanwhile.
        """
        row = self.conn.execute(
            "SELECT channels, outcomes, notified_at IS NOT NULL"
            " FROM notifications.notifications WHERE order_id = %s AND kind = %s",
            (order_id, kind),
        ).fetchone()
        return None if row is None else _delivery(order_id, kind, *row)

    def save(self, delivery: Delivery) -> None:
        """Store the channels' outcomes, and when the notification was first announced."""
        self.conn.execute(
            "UPDATE notifications.notifications SET outcomes = %s,"
            " notified_at = CASE WHEN %s THEN coalesce(notified_at, now()) END"
            " WHERE order_id = %s AND kind = %s",
            (Jsonb(dict(delivery.outcomes)), delivery.notified, delivery.order_id, delivery.kind),
        )

    def kinds(self, order_id: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT kind FROM notifications.notifications WHERE order_id = %s", (order_id,)
        ).fetchall()
        return {r[0] for r in rows}

    def deliveries(self, order_id: str) -> dict[str, Delivery]:
        """Every notification of the order by kind, as ``delivery`` reads one."""
        rows = self.conn.execute(
            "SELECT kind, channels, outcomes, notified_at IS NOT NULL"
            " FROM notifications.notifications WHERE order_id = %s",
            (order_id,),
        ).fetchall()
        return {r[0]: _delivery(order_id, *r) for r in rows}


def _delivery(
    order_id: str,
    kind: NotificationKind,
    channels: list[str],
    outcomes: dict[str, ChannelOutcome],
    notified: bool,
) -> Delivery:
    return Delivery(
        order_id=order_id,
        kind=kind,
        channels=tuple(channels),
        outcomes=dict(outcomes),
        notified=bool(notified),
    )
