"""The runtime's errors.

The split that matters is retryable versus poison: a retryable failure (the
database or the broker is unavailable, a dependency answered "try later") is
retried and never skipped; a poison message (bad bytes, an invalid envelope or
payload, a bug in a handler) is dead-lettered so that it never blocks its
partition.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "EffectUsageError",
    "ForgedEventError",
    "InvalidEnvelopeError",
    "OutboxUsageError",
    "PoisonMessageError",
    "RetryUntilDoneError",
    "RetryableError",
    "SagaRuntimeError",
]


class SagaRuntimeError(Exception):
    """Root of every error the runtime raises."""


class ConfigurationError(SagaRuntimeError):
    """A setting is missing or inconsistent; the process cannot start."""


class RetryableError(SagaRuntimeError):
    """A handler failed for a reason that may pass (a dependency timed out, a 5xx).

    The consumer retries the message with backoff; after the configured number
    of attempts it is dead-lettered with this error as its reason.
    """


class RetryUntilDoneError(RetryableError):
    """A step that must happen (a compensation) failed for a reason that may pass.

    Retried with capped backoff for as long as it takes, like a database
    outage, and never dead-lettered: giving up would leave the saga with an
    effect nobody undoes. A permanent refusal is a different error (poison).
    """


class PoisonMessageError(SagaRuntimeError):
    """The message can never be processed as it is: dead-letter it at once."""


class InvalidEnvelopeError(PoisonMessageError):
    """The bytes are not a valid event envelope."""


class ForgedEventError(PoisonMessageError):
    """An event arrived on another topic than its declared producer's events topic.

    Only the producer's relay may write its topic (Kafka ACLs), so an event type read
    from any other topic was written by someone who may not emit it: dead-lettered,
    never applied.
    """


class OutboxUsageError(SagaRuntimeError):
    """The outbox was used outside the transaction that changes state.

    Emitting an event outside that transaction would break the guarantee that
    an event exists if and only if its state change committed.
    """


class EffectUsageError(SagaRuntimeError):
    """An effect was requested outside a transaction, of an undeclared kind, or with a
    key that already names a different effect: a bug in the caller."""
