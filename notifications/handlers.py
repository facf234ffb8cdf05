"""Notifications' reactions to order events: plain functions over a unit of work.

Delivery: claim the (order, kind) row, send, emit CustomerNotified, all inside
the event's transaction. An event whose row already exists sends nothing, so
at most one row per order and kind ever commits. A crash or failure after the
send and before the commit rolls the row back and the retry sends again, with
the same Message-ID and delivery id, so the receiver can recognise the resend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg

from notifications import domain
from notifications.domain import Notification
from notifications.events import CustomerNotified
from notifications.repository import NotificationRepository
from orders.events import OrderApproved, OrderCancelled, OrderShipped
from saga_runtime import Envelope, UnitOfWork, get_logger

log = get_logger(__name__)


class Channel(Protocol):
    def __call__(self, notification: Notification) -> None: ...


class NotificationStore(Protocol):
    def claim(self, notification: Notification, channels: Sequence[str]) -> bool: ...


@dataclass(frozen=True)
class Notifier:
    """How customers are reached: email always, a webhook when one is configured."""

    email: Channel
    webhook: Channel | None = None
    store: Callable[[psycopg.Connection], NotificationStore] = NotificationRepository

    @property
    def channels(self) -> list[str]:
        return ["email"] if self.webhook is None else ["email", "webhook"]


def _notify(uow: UnitOfWork, notification: Notification, notifier: Notifier) -> None:
    channels = notifier.channels
    if not notifier.store(uow.conn).claim(notification, channels):
        log.info("notification.already_sent", kind=notification.kind)
        return
    notifier.email(notification)
    if notifier.webhook is not None:
        notifier.webhook(notification)
    uow.emit(
        CustomerNotified(order_id=notification.order_id, kind=notification.kind, channels=channels),
        aggregate_id=notification.order_id,
    )
    log.info("notification.sent", kind=notification.kind, channels=channels)


def on_order_approved(uow: UnitOfWork, event: Envelope, *, notifier: Notifier) -> None:
    approved = event.payload_as(OrderApproved)
    uow.lock(approved.order_id)
    _notify(uow, domain.order_approved(approved), notifier)


def on_order_shipped(uow: UnitOfWork, event: Envelope, *, notifier: Notifier) -> None:
    shipped = event.payload_as(OrderShipped)
    uow.lock(shipped.order_id)
    _notify(uow, domain.order_shipped(shipped), notifier)


def on_order_cancelled(uow: UnitOfWork, event: Envelope, *, notifier: Notifier) -> None:
    cancelled = event.payload_as(OrderCancelled)
    uow.lock(cancelled.order_id)
    _notify(uow, domain.order_cancelled(cancelled), notifier)
