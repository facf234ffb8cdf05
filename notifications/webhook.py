"""The optional webhook channel: a signed JSON POST per notification.

The receiver checks ``X-Saga-Signature: sha256=<hex>`` (HMAC-SHA256 of the raw
body with the shared secret, see ``verify``) and deduplicates on
``X-Saga-Delivery``, which is the same for every resend of one notification.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from notifications.domain import Notification
from notifications.errors import DeliveryRejected
from saga_runtime import Backoff, RetryableError, get_logger

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "Transport",
    "WebhookClient",
    "payload",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Saga-Signature"
DELIVERY_HEADER = "X-Saga-Delivery"
_SCHEME = "sha256="

# (url, body, headers, timeout) -> HTTP status; raises OSError when no answer came.
Transport = Callable[[str, bytes, Mapping[str, str], float], int]

log = get_logger(__name__)


def sign(body: bytes, secret: str) -> str:
    """The ``X-Saga-Signature`` value for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"{_SCHEME}{digest}"


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    if not signature or not signature.startswith(_SCHEME):
        return False
    return hmac.compare_digest(sign(body, secret), signature.strip())


def payload(notification: Notification) -> bytes:
    """The POST body: compact, sorted JSON, so equal notifications have equal bytes."""
    document = {
        "delivery_id": notification.delivery_id,
        "order_id": notification.order_id,
        "kind": notification.kind,
        "recipient": notification.recipient,
        "subject": notification.subject,
        "body": notification.body,
        "message_id": notification.message_id,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def urllib_transport(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise reason if isinstance(reason, OSError) else OSError(str(reason)) from exc


def _retryable_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class WebhookClient:
    """POSTs a notification, retrying transient failures a few times within the call.

    After ``attempts`` transient failures it raises RetryableError, so the
    consumer retries the whole event later (with the same delivery id); a 4xx
    other than 408/425/429 is a permanent refusal (DeliveryRejected).
    """

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        attempts: int = 3,
        timeout: float = 5.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
        transport: Transport = urllib_transport,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.url = url
        self._secret = secret
        self.attempts = attempts
        self.timeout = timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._transport = transport
        self._sleep = sleep

    def headers(self, notification: Notification, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "saga-outbox-notifications",
            SIGNATURE_HEADER: sign(body, self._secret),
            DELIVERY_HEADER: notification.delivery_id,
            "X-Saga-Notification": notification.kind,
        }

    def post(self, notification: Notification) -> None:
        body = payload(notification)
        headers = self.headers(notification, body)
        backoff = Backoff(self._backoff_initial, self._backoff_max)
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                status = self._transport(self.url, body, headers, self.timeout)
            except OSError as exc:
                last = f"no answer: {exc!r}"
            else:
                if 200 <= status < 300:
                    return
                if not _retryable_status(status):
                    raise DeliveryRejected(
                        f"webhook {self.url} refused the delivery: HTTP {status}"
                    )
                last = f"HTTP {status}"
            log.warning("webhook.attempt_failed", attempt=attempt, error=last)
            if attempt < self.attempts:
                self._sleep(backoff.next_delay())
        raise RetryableError(f"webhook {self.url} failed {self.attempts} times, last: {last}")
