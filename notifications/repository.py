"""SQL for the notifications table: one row per order and kind (UNIQUE (order_id, kind)).

The row is claimed in the event's transaction, with the channels to send on, and the
same transaction requests one effect per channel. Each channel's outcome is recorded
on the row (``outcomes``: channel -> delivered or failed) by the decision about its
effect; ``notified_at`` is when CustomerNotified was emitted (NULL: not yet).
``sent_at`` is when the row was claimed, i.e. when sending was decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import psycopg
from psycopg.types.json import Jsonb

from contracts.notifications import NotificationKind
from notifications.domain import ChannelOutcome, Delivery, Notification
from saga_runtime import AggregateStates


@dataclass(frozen=True)
class Claimed:
    """One (order, kind) row: whom it goes to, and where its delivery stands."""

    recipient: str
    subject: str
    delivery: Delivery


@dataclass(frozen=True)
class OrderNotifications:
    """An order's notifications by kind, as handlers read and change them per batch.

    ``changed`` names the kinds claimed or recorded in this unit of work: only they are
    written when it flushes.
    """

    order_id: str
    rows: Mapping[str, Claimed] = field(default_factory=dict)
    changed: frozenset[str] = frozenset()

    def claim(self, notification: Notification, channels: Sequence[str]) -> OrderNotifications:
        """With ``notification`` claimed, on ``channels``, nothing delivered yet."""
        delivery = Delivery(
            order_id=self.order_id, kind=notification.kind, channels=tuple(channels)
        )
        return self._with(Claimed(notification.recipient, notification.subject, delivery))

    def record(self, delivery: Delivery) -> OrderNotifications:
        """With ``delivery`` (of a kind claimed before) as it stands now."""
        return self._with(replace(self.rows[delivery.kind], delivery=delivery))

    def _with(self, row: Claimed) -> OrderNotifications:
        kind = row.delivery.kind
        return replace(self, rows={**self.rows, kind: row}, changed=self.changed | {kind})


def load_notifications(conn: psycopg.Connection, order_ids: list[str]) -> list[OrderNotifications]:
    """The notifications of the orders among ``order_ids`` that have any, in one query."""
    found: dict[str, dict[str, Claimed]] = {}
    for order_id, kind, recipient, subject, channels, outcomes, notified in conn.execute(
        "SELECT order_id, kind, recipient, subject, channels, outcomes, notified_at IS NOT NULL"
        " FROM notifications.notifications WHERE order_id = ANY(%s)",
        (order_ids,),
    ):
        delivery = _delivery(order_id, kind, channels, outcomes, notified)
        found.setdefault(order_id, {})[kind] = Claimed(recipient, subject, delivery)
    return [OrderNotifications(order_id, rows) for order_id, rows in found.items()]


def save_notifications(conn: psycopg.Connection, orders: list[OrderNotifications]) -> None:
    """Claim new rows and store changed outcomes, in one statement.

    ``notified_at`` is when CustomerNotified was first emitted: kept once set.
    """
    rows = [order.rows[kind] for order in orders for kind in sorted(order.changed)]
    if not rows:
        return
    conn.execute(
        "INSERT INTO notifications.notifications AS n"
        " (order_id, kind, recipient, subject, channels, outcomes, notified_at)"
        " SELECT u.o, u.k, u.r, u.s, ARRAY(SELECT jsonb_array_elements_text(u.c)), u.out,"
        "  CASE WHEN u.told THEN now() END"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::jsonb[], %s::jsonb[],"
        "  %s::bool[]) AS u(o, k, r, s, c, out, told)"
        " ON CONFLICT (order_id, kind) DO UPDATE SET outcomes = EXCLUDED.outcomes,"
        "  notified_at = CASE WHEN EXCLUDED.notified_at IS NOT NULL"
        "   THEN coalesce(n.notified_at, EXCLUDED.notified_at) END",
        (
            [row.delivery.order_id for row in rows],
            [row.delivery.kind for row in rows],
            [row.recipient for row in rows],
            [row.subject for row in rows],
            [Jsonb(list(row.delivery.channels)) for row in rows],
            [Jsonb(dict(row.delivery.outcomes)) for row in rows],
            [row.delivery.notified for row in rows],
        ),
    )


NOTIFICATIONS: AggregateStates[OrderNotifications] = AggregateStates(
    "notifications.notifications",
    load_many=load_notifications,
    save_many=save_notifications,
    key=lambda order: order.order_id,
)
"""Each order's notifications as handlers read and change them: per batch, not per event."""


class NotificationRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

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
