"""Notifications' reactions to order events: plain functions over a unit of work.

Delivery: claim the (order, kind) row, send on each channel in turn (email, then
the webhook when one is configured), emit CustomerNotified, all inside the
event's transaction. An event whose row already exists sends nothing, so at
most one row per order and kind ever commits.

A failure after a send and before the commit rolls the row back, and the
consumer retries the event (or dead-letters it, and it may be redriven). So
that the retry does not send again what already went out, a channel that
fails after earlier channels of the same attempt succeeded first has those
recorded as delivered (``notifications.deliveries``), on a connection of their
own, committed at once; the retry reads that record and sends only the rest.
One webhook outage thus mails the customer once, not once per retry. With a
single channel nothing can be partly delivered, and nothing is read or
recorded.

A retry may still send a channel again, with the same Message-ID and delivery
id, so the receiver can recognise the resend: every channel, when the attempt
fails after all of them were sent (at its commit); the channels an attempt sent
before its process died (a crash between a send and its record); the earlier
channels, when recording them failed too (the database is down).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg

from contracts.notifications import CustomerNotified
from contracts.orders import OrderApproved, OrderCancelled, OrderShipped
from notifications import domain
from notifications.domain import Notification
from notifications.repository import NotificationRepository
from saga_runtime import Envelope, UnitOfWork, get_logger

log = get_logger(__name__)


class Channel(Protocol):
    def __call__(self, notification: Notification) -> None: ...


class NotificationStore(Protocol):
    def claim(self, notification: Notification, channels: Sequence[str]) -> bool: ...

    def delivered(self, notification: Notification) -> set[str]: ...


class DeliveryRecord(Protocol):
    """Records channels as delivered, durably: committed outside the event's transaction."""

    def __call__(self, notification: Notification, channels: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class Notifier:
    """How customers are reached: email always, a webhook when one is configured."""

    email: Channel
    webhook: Channel | None = None
    store: Callable[[psycopg.Connection], NotificationStore] = NotificationRepository
    # Needed as soon as there is more than one channel (see the module docstring).
    record: DeliveryRecord | None = None

    def __post_init__(self) -> None:
        if len(self.senders) > 1 and self.record is None:
            raise ValueError("a notifier with several channels needs a record of deliveries")

    @property
    def senders(self) -> list[tuple[str, Channel]]:
        """The channels by name, in the order they are sent on."""
        webhook = [] if self.webhook is None else [("webhook", self.webhook)]
        return [("email", self.email), *webhook]

    @property
    def channels(self) -> list[str]:
        return [name for name, _ in self.senders]


def _notify(uow: UnitOfWork, notification: Notification, notifier: Notifier) -> None:
    channels = notifier.channels
    store = notifier.store(uow.conn)
    if not store.claim(notification, channels):
        log.info("notification.already_sent", kind=notification.kind)
        return
    senders = notifier.senders
    # A single channel is either sent or not: no query for it. The record is
    # committed by the time it is read (READ COMMITTED: each statement sees what
    # committed before it), so this transaction sees it.
    done = store.delivered(notification) if len(senders) > 1 else set()
    if done:
        log.info("notification.resumed", kind=notification.kind, already_delivered=sorted(done))
    sent: list[str] = []
    for name, send in senders:
        if name in done:
            continue
        try:
            send(notification)
        except Exception as exc:
            if sent:
                _record(notifier, notification, sent, failed=name, error=exc)
            raise
        sent.append(name)
    uow.emit(
        CustomerNotified(order_id=notification.order_id, kind=notification.kind, channels=channels),
        aggregate_id=notification.order_id,
    )
    log.info("notification.sent", kind=notification.kind, channels=channels)


def _record(
    notifier: Notifier,
    notification: Notification,
    sent: Sequence[str],
    *,
    failed: str,
    error: Exception,
) -> None:
    """Record ``sent`` before the transaction rolls back, so the retry skips them.

    A record that fails only means they are sent again: the channel's failure
    is what the caller raises, whatever happens here.
    """
    assert notifier.record is not None  # checked by Notifier for several channels
    try:
        notifier.record(notification, sent)
    except Exception as exc:
        log.warning(
            "notification.delivery_not_recorded",
            kind=notification.kind,
            channels=list(sent),
            error=repr(exc),
        )
        return
    log.info(
        "notification.partly_delivered",
        kind=notification.kind,
        recorded=list(sent),
        failed=failed,
        error=repr(error),
    )


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
