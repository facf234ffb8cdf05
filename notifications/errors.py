"""The notifications service's errors (transient failures use saga_runtime.RetryableError)."""

from __future__ import annotations


class NotificationsError(Exception):
    """Root of the errors this package raises."""


class DeliveryRejected(NotificationsError):
    """A channel refused the notification for good (SMTP 5xx, webhook 4xx): retrying is useless.

    Not retryable, so the consumer dead-letters the event where an operator sees it.
    """
