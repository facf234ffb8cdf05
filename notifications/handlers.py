"""Notifications' reactions to order events, and its decision about each send's outcome.

A reaction claims the (order, kind) row and requests one effect per channel (the
e-mail, then the webhook when one is configured), in the event's transaction: no
mail server or receiver is called there, so another message's failure can never
make a mail go twice, and an outage only delays the sends. An event whose row
already exists requests nothing: at most one notification per order and kind.

The executor makes the calls (``notifications.channels``), one order's in the order
requested, retrying transient failures until the delivery deadline; a repeated call
(after a crash between the send and its recording) carries the same Message-ID or
delivery id. ``on_delivered`` records each channel's outcome on the row and emits
CustomerNotified once every channel has one (see ``domain.Delivery``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from contracts.orders import OrderApproved, OrderCancelled, OrderShipped
from notifications import domain
from notifications.domain import Notification
from notifications.repository import NOTIFICATIONS, OrderNotifications
from saga_runtime import Effect, EffectOutcome, Envelope, RetryPolicy, UnitOfWork, get_logger

log = get_logger(__name__)

CHANNELS = ("email", "webhook")
# How long a channel is retried through an outage by default (NOTIFICATIONS_DELIVERY_DEADLINE).
DELIVERY_DEADLINE = timedelta(hours=24)
# Between attempts of one send: quick at first (a blip), then every 30 s at most, so a
# server that comes back is used within half a minute.
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)


@dataclass(frozen=True)
class DeliveryPlan:
    """Which channels a notification goes on, in order, and how long each is tried."""

    channels: Sequence[str] = ("email",)
    deadline: timedelta = DELIVERY_DEADLINE

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or len(set(self.channels)) != len(self.channels) or not self.channels:
            raise ValueError(f"channels must be distinct ones of {CHANNELS}, not {self.channels}")
        if self.deadline <= timedelta(0):
            raise ValueError("the delivery deadline must be positive")


def _notify(uow: UnitOfWork, notification: Notification, plan: DeliveryPlan) -> None:
    sent = NOTIFICATIONS.get(uow, notification.order_id)
    if sent is not None and notification.kind in sent.rows:
        log.info("notification.already_claimed", kind=notification.kind)
        return
    sent = sent or OrderNotifications(notification.order_id)
    NOTIFICATIONS.save(uow, sent.claim(notification, plan.channels))
    request = notification.to_request()
    for channel in plan.channels:
        uow.request_effect(
            channel,
            aggregate_id=notification.order_id,
            key=domain.effect_key(notification.order_id, notification.kind, channel),
            request=request,
            deadline=plan.deadline,
        )
    log.debug("notification.requested", kind=notification.kind, channels=list(plan.channels))


def on_order_approved(uow: UnitOfWork, event: Envelope, *, delivery_plan: DeliveryPlan) -> None:
    approved = event.payload_as(OrderApproved)
    uow.lock(approved.order_id)
    _notify(uow, domain.order_approved(approved), delivery_plan)


def on_order_shipped(uow: UnitOfWork, event: Envelope, *, delivery_plan: DeliveryPlan) -> None:
    shipped = event.payload_as(OrderShipped)
    uow.lock(shipped.order_id)
    _notify(uow, domain.order_shipped(shipped), delivery_plan)


def on_order_cancelled(uow: UnitOfWork, event: Envelope, *, delivery_plan: DeliveryPlan) -> None:
    cancelled = event.payload_as(OrderCancelled)
    uow.lock(cancelled.order_id)
    _notify(uow, domain.order_cancelled(cancelled), delivery_plan)


def on_delivered(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
    """One channel's send came back: record it; announce the notification once settled.

    Runs holding the order's lock. Called again for a channel an operator retried
    after it failed: a delivery then counts, but the notification is never announced
    twice.
    """
    notification = Notification.from_request(effect.request)
    sent = NOTIFICATIONS.get(uow, notification.order_id)
    if sent is None or notification.kind not in sent.rows:
        # The claim commits with the request: a row that is missing was deleted by hand.
        raise LookupError(f"no {notification.kind} notification of {notification.order_id}")
    after, told = sent.rows[notification.kind].delivery.record(effect.kind, delivered=outcome.ok)
    NOTIFICATIONS.save(uow, sent.record(after))
    if not outcome.ok:
        log.warning("notification.channel_failed", channel=effect.kind, error=outcome.error)
    if told is not None:
        uow.emit(told, aggregate_id=notification.order_id)
        log.debug("notification.sent", kind=notification.kind, channels=told.channels)
    elif after.settled and not after.delivered:
        log.error("notification.undelivered", kind=notification.kind, channels=after.channels)
