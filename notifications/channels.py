"""The sends themselves: the calls of the ``email`` and ``webhook`` effects.

Made by the effect executor, outside any transaction, from the notification the
reaction stored in the effect's request. Each is safe to repeat: the e-mail carries
the notification's Message-ID and the webhook its delivery id, both fixed by the
order and kind that the effect's key names, so a resend after a crash between the
send and its recording is recognisable as one.

Failures are the clients' (``mailer``, ``webhook``): ``RetryableError`` for what may
pass (no connection, a timeout, an SMTP 4xx, HTTP 408/425/429/5xx), retried by the
executor until the delivery deadline; ``DeliveryRejected`` for a refusal for good
(an SMTP 5xx, an address that cannot be written, HTTP 4xx), the channel's outcome
at once.
"""

from __future__ import annotations

from typing import Any, Protocol

from notifications.domain import Notification
from notifications.errors import DeliveryRejected

__all__ = ["Mailer", "Webhook", "post_webhook", "send_email"]


class Mailer(Protocol):
    def send(self, notification: Notification) -> None: ...


class Webhook(Protocol):
    def post(self, notification: Notification) -> None: ...


def send_email(request: dict[str, Any], key: str, *, mailer: Mailer) -> dict[str, Any]:
    notification = Notification.from_request(request)
    mailer.send(notification)
    return {"message_id": notification.message_id}


def post_webhook(request: dict[str, Any], key: str, *, webhook: Webhook | None) -> dict[str, Any]:
    if webhook is None:
        # Requested while a webhook was configured; it has been turned off since.
        raise DeliveryRejected("no webhook is configured (NOTIFICATIONS_WEBHOOK_URL) any more")
    notification = Notification.from_request(request)
    webhook.post(notification)
    return {"delivery_id": notification.delivery_id}
