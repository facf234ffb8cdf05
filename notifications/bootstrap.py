"""Composition root of the notifications service (a consumer only: it has no API).

The reactions get the delivery plan (channels and deadline); the calls of the
``email`` and ``webhook`` effects get the mailer and the webhook client (None when
no webhook is configured).
"""

from __future__ import annotations

from datetime import timedelta

from notifications.handlers import DeliveryPlan
from notifications.mailer import SmtpMailer
from notifications.settings import NotificationsSettings
from notifications.webhook import WebhookClient
from saga_runtime import Composition, ConfigurationError, ServiceRuntime, build_runtime

SERVICE = "notifications"
Settings = NotificationsSettings


def webhook(settings: NotificationsSettings) -> WebhookClient | None:
    if settings.webhook_url is None:
        return None
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        # An unsigned webhook could be forged by anyone who knows the URL.
        raise ConfigurationError(
            "NOTIFICATIONS_WEBHOOK_URL is set but NOTIFICATIONS_WEBHOOK_SECRET is not"
        )
    return WebhookClient(
        url=settings.webhook_url,
        secret=settings.webhook_secret.get_secret_value(),
        previous_secrets=[
            s.get_secret_value() for s in [settings.webhook_previous_secret] if s is not None
        ],
        timeout=settings.webhook_timeout,
    )


def compose(settings: NotificationsSettings) -> Composition:
    mailer = SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.sender,
        timeout=settings.smtp_timeout,
        connections=settings.smtp_connections,
    )
    hook = webhook(settings)
    plan = DeliveryPlan(
        channels=("email",) if hook is None else ("email", "webhook"),
        deadline=timedelta(seconds=settings.delivery_deadline),
    )
    return Composition(
        dependencies={"delivery_plan": plan, "mailer": mailer, "webhook": hook},
        closers=[mailer.close],
    )


def build(settings: NotificationsSettings) -> ServiceRuntime:
    from saga_system import SYSTEM

    return build_runtime(SYSTEM, SERVICE, settings, compose(settings).dependencies)
