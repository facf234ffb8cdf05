"""The optional webhook channel: a signed JSON POST per notification.

Each request carries ``X-Saga-Signature: t=<unix seconds>,v1=<hex>``, where the
hex is the HMAC-SHA256, with the shared secret, of ``"<t>.<raw body>"``: the
scheme of widely used payment webhooks (Stripe's ``Stripe-Signature``). Signing
the timestamp with the body lets a receiver reject a captured request replayed
later (``verify``'s ``tolerance``); while a secret is being rotated the header
carries one ``v1`` per secret. ``X-Saga-Delivery`` is the same for every resend
of one notification, so a receiver deduplicates on it.

Delivery: 2xx is done; a transient failure (no answer, timeout, 408, 425, 429,
5xx) raises RetryableError at once, and the effect executor tries again later
(same body and delivery id, a fresh timestamp and signature); any other status
(4xx, a redirect) is a permanent refusal, DeliveryRejected.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from notifications.domain import Notification
from notifications.errors import DeliveryRejected, NotificationsError
from saga_runtime import RetryableError

__all__ = [
    "DEFAULT_TOLERANCE",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "SignatureError",
    "Transport",
    "WebhookClient",
    "check_signature",
    "payload",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Saga-Signature"
DELIVERY_HEADER = "X-Saga-Delivery"
DEFAULT_TOLERANCE = 300.0  # seconds between signing and checking, either way
_SCHEME = "v1"
_HEX_DIGITS = frozenset("0123456789abcdef")
_MAX_HEADER = 4096  # far more than a few signatures need; bounds the work on garbage

# (url, body, headers, timeout) -> HTTP status; raises OSError when no answer came.
Transport = Callable[[str, bytes, Mapping[str, str], float], int]


class SignatureError(NotificationsError):
    """``check_signature`` refused a request: missing, malformed, stale or wrong signature.

    The message says which; it never echoes the header or a secret.
    """


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secrets: str | Iterable[str], *, timestamp: int) -> str:
    """The ``X-Saga-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds).

    Several secrets (during a rotation) give one ``v1`` each, current first.
    """
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys:
        raise ValueError("at least one secret is needed to sign")
    return ",".join([f"t={timestamp}", *(f"{_SCHEME}={_digest(k, timestamp, body)}" for k in keys)])


def _parse(header: object) -> tuple[int, list[str]]:
    if isinstance(header, bytes | bytearray):
        try:
            header = bytes(header).decode("ascii")
        except UnicodeDecodeError:
            raise SignatureError("signature header is not ASCII") from None
    if not isinstance(header, str) or not header.strip():
        raise SignatureError("no signature header")
    if not header.isascii():
        raise SignatureError("signature header is not ASCII")
    if len(header) > _MAX_HEADER:
        raise SignatureError("signature header is too long")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, equals, value = item.strip().partition("=")
        if not equals:
            raise SignatureError("signature header is malformed")
        if key == "t":
            timestamps.append(value)
        elif key == _SCHEME and len(value) == 64 and set(value) <= _HEX_DIGITS:
            # Lower-case hex only, as signed: anything else cannot match anyway.
            signatures.append(value)
        # Other schemes (v0, a future v2) are ignored, as Stripe's receivers do.
    if len(timestamps) != 1:
        raise SignatureError("signature header needs exactly one timestamp t=")
    [raw] = timestamps
    # ASCII digits only, and few of them: int() of thousands of digits raises ValueError.
    if not raw or len(raw) > 12 or not raw.isdigit():
        raise SignatureError("signature timestamp is malformed")
    if not signatures:
        raise SignatureError("signature header has no v1 signature")
    return int(raw), signatures


def check_signature(
    body: bytes,
    secrets: str | Iterable[str],
    header: str | bytes | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: Callable[[], float] = time.time,
) -> None:
    """What a receiver does with the raw body and the header; raises SignatureError if bad.

    Valid when the timestamp is within ``tolerance`` seconds of ``now()`` (a
    replay later than that is refused) and any ``v1`` in the header matches
    any of ``secrets`` (rotation: accept the old and the new secret for a
    while). Digests are compared in constant time. Never raises anything else
    for any header, including None, non-ASCII text or bytes; only a receiver
    without a secret gets ValueError (its configuration, not the request).
    """
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    if not keys or not all(keys):
        raise ValueError("verifying needs at least one non-empty secret")
    timestamp, signatures = _parse(header)
    if abs(now() - timestamp) > tolerance:
        raise SignatureError("signature timestamp is outside the tolerance (replayed or stale)")
    if not isinstance(body, bytes | bytearray):
        raise SignatureError("the body must be the raw bytes received")
    matched = False
    for key in keys:
        expected = _digest(key, timestamp, bytes(body))
        for signature in signatures:
            # No early exit: the time taken does not tell which one matched.
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise SignatureError("no signature matches the body")


def verify(
    body: bytes,
    secrets: str | Iterable[str],
    header: str | bytes | None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: Callable[[], float] = time.time,
) -> bool:
    """``check_signature`` as a yes or no: False for any missing, malformed, stale or wrong one."""
    try:
        check_signature(body, secrets, header, tolerance=tolerance, now=now)
    except SignatureError:
        return False
    return True


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as it is: urllib would turn the POST into a bodiless GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect())


def urllib_transport(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST with urllib; the status, or OSError when no (complete) answer came."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise reason if isinstance(reason, OSError) else OSError(str(reason)) from exc
    except http.client.HTTPException as exc:
        # A garbled or truncated answer (BadStatusLine, IncompleteRead): as if none came.
        raise OSError(f"bad HTTP answer: {exc!r}") from exc


def retryable_status(status: int) -> bool:
    """Statuses that mean "try again later": 408, 425, 429 and every 5xx."""
    return status in (408, 425, 429) or status >= 500


class WebhookClient:
    """POSTs a notification once per call.

    No retries within the call: the effect executor retries a transient failure
    (RetryableError) with its own backoff until the delivery deadline, holding no
    transaction, lock or thread meanwhile. A 4xx other than 408/425/429, or a
    redirect, is a permanent refusal: DeliveryRejected.
    """

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        previous_secrets: Iterable[str] = (),
        timeout: float = 5.0,
        transport: Transport = urllib_transport,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required")
        self.url = url
        self._secrets = [secret, *(s for s in previous_secrets if s and s != secret)]
        self.timeout = timeout
        self._transport = transport
        self._clock = clock

    def headers(self, notification: Notification, body: bytes) -> dict[str, str]:
        """The request's headers, signed now: each attempt gets a fresh timestamp."""
        return {
            "Content-Type": "application/json",
            "User-Agent": "saga-outbox-notifications",
            SIGNATURE_HEADER: sign(body, self._secrets, timestamp=int(self._clock())),
            DELIVERY_HEADER: notification.delivery_id,
            "X-Saga-Notification": notification.kind,
        }

    def post(self, notification: Notification) -> None:
        body = payload(notification)
        try:
            status = self._transport(self.url, body, self.headers(notification, body), self.timeout)
        except OSError as exc:
            raise RetryableError(f"webhook {self.url} gave no answer: {exc!r}") from exc
        if 200 <= status < 300:
            return
        if retryable_status(status):
            raise RetryableError(f"webhook {self.url} failed: HTTP {status}")
        raise DeliveryRejected(f"webhook {self.url} refused the delivery for good: HTTP {status}")
