"""Composition root of the notifications service (a consumer only: it has no API)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from notifications.domain import Notification
from notifications.handlers import Notifier
from notifications.mailer import SmtpMailer
from notifications.repository import NotificationRepository
from notifications.settings import NotificationsSettings
from notifications.webhook import WebhookClient
from saga_runtime import (
    Composition,
    ConfigurationError,
    DatabaseSettings,
    ServiceRuntime,
    build_runtime,
    connect,
)

SERVICE = "notifications"
Settings = NotificationsSettings


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


def compose(settings: NotificationsSettings) -> Composition:
    return Composition(dependencies={"notifier": notifier(settings)})


def build(settings: NotificationsSettings) -> ServiceRuntime:
    from saga_system import SYSTEM

    return build_runtime(SYSTEM, SERVICE, settings, compose(settings).dependencies)
