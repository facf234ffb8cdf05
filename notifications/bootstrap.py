"""Composition root of the notifications service (a consumer only: it has no API)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from notifications import handlers
from notifications.domain import Notification
from notifications.handlers import Notifier
from notifications.mailer import SmtpMailer
from notifications.repository import NotificationRepository
from notifications.settings import NotificationsSettings
from notifications.webhook import WebhookClient
from saga_runtime import (
    ConfigurationError,
    DatabaseSettings,
    ServiceRuntime,
    configure_logging,
    connect,
)

SERVICE = "notifications"


def record_delivered(
    database: DatabaseSettings, notification: Notification, channels: Sequence[str]
) -> None:
    """Record delivered channels on a connection of its own, committed at once.

    Called only when a channel failed after others were sent, i.e. while the
    event's transaction is about to roll back: rare, so the connection is
    opened for it rather than held.
    """
    with connect(database, role=SERVICE, name=f"{SERVICE}-deliveries", autocommit=True) as conn:
        NotificationRepository(conn).record_delivered(notification, channels)


def notifier(settings: NotificationsSettings) -> Notifier:
    mailer = SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.sender,
        timeout=settings.smtp_timeout,
    )
    if settings.webhook_url is None:
        return Notifier(email=mailer.send)
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        # An unsigned webhook could be forged by anyone who knows the URL.
        raise ConfigurationError(
            "NOTIFICATIONS_WEBHOOK_URL is set but NOTIFICATIONS_WEBHOOK_SECRET is not"
        )
    webhook = WebhookClient(
        url=settings.webhook_url,
        secret=settings.webhook_secret.get_secret_value(),
        previous_secrets=[
            s.get_secret_value() for s in [settings.webhook_previous_secret] if s is not None
        ],
        attempts=settings.webhook_attempts,
        timeout=settings.webhook_timeout,
        backoff_initial=settings.webhook_backoff_initial,
        backoff_max=settings.webhook_backoff_max,
    )
    return Notifier(
        email=mailer.send,
        webhook=webhook.post,
        record=partial(record_delivered, settings.database),
    )


def build(settings: NotificationsSettings) -> ServiceRuntime:
    notify = notifier(settings)
    handled = {
        "OrderApproved": partial(handlers.on_order_approved, notifier=notify),
        "OrderShipped": partial(handlers.on_order_shipped, notifier=notify),
        "OrderCancelled": partial(handlers.on_order_cancelled, notifier=notify),
    }
    return ServiceRuntime.build(
        service=SERVICE,
        kafka=settings.kafka,
        database=settings.database,
        consumer=settings.consumer,
        consumers=settings.consumers,
        handlers=handled,
        subscribes_to=["orders"],
        # Every one of them sends mail: never rolled back (and resent) with another's failure.
        side_effecting=handled.keys(),
    )


def main() -> int:
    settings = NotificationsSettings()
    configure_logging(settings.log, service=SERVICE)
    runtime = build(settings)
    try:
        return runtime.run_consumer(
            health_host=settings.health_host, health_port=settings.health_port
        )
    finally:
        runtime.close()
