"""The notifications service's errors (transient failures use saga_runtime.RetryableError)."""

from __future__ import annotations


class NotificationsError(Exception):
    """Root of the errors this package raises."""


class DeliveryRejected(NotificationsError):
    """The notification can never be delivered as it is: retrying is useless.

    Raised for an SMTP 5xx reply (to the sender, the recipient or the data), an
    address that needs SMTPUTF8 (a UTF-8 local part) on a server that does not
    offer it, an address that cannot be written on the wire (its domain does
    not IDNA-encode to a host name), and a webhook answering a 4xx other than
    408/425/429 or a redirect. Not retryable: the channel's effect fails at once,
    with this message as its error, where an operator sees it (``sagactl effects``)
    and may retry it once the cause is fixed.
    """
