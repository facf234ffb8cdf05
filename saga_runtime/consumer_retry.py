"""The consumer's retry policy: which failures are retried how, and each message's budget."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from confluent_kafka import KafkaException, Message

from saga_runtime.consumer_messages import position
from saga_runtime.db import TRANSIENT_DB_ERRORS
from saga_runtime.dead_letters import DeadLetterPublishError
from saga_runtime.settings import ConsumerSettings

__all__ = [
    "CONFLICTS",
    "DEAD_LETTER_RETRY",
    "IDLE_TIMEOUT",
    "TRANSIENT",
    "RetryBudget",
    "Retrying",
]

TRANSIENT: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, DeadLetterPublishError)
# What makes the dead-letter path itself try again later (a full producer queue too).
DEAD_LETTER_RETRY: tuple[type[BaseException], ...] = (*TRANSIENT, BufferError, KafkaException)
# Transient, but in a batch a sign of lock-order conflicts between batches.
CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
# The server ended the transaction because it sat idle too long: the database is up,
# the handler waited too long on something outside it. Retried like a handler's
# RetryableError, within its budget, not for ever like an outage (each attempt may
# have repeated a side effect). In a batch: one message per transaction, to find which.
IDLE_TIMEOUT = psycopg.errors.IdleInTransactionSessionTimeout


@dataclass
class Retrying:
    """A message whose handler raised RetryableError: since when, how often, and last when."""

    since: float
    last: float
    attempts: int = 0


class RetryBudget:
    """The attempts of each message whose handler failed, and when it has had enough.

    A handler's ``RetryableError`` is retried with backoff up to
    ``retry_backoff_max`` for ``retry_for`` from its first failure (and at most
    ``max_attempts`` times, if set); only then is the message dead-lettered.
    Records are keyed by the message's position, so a redelivery of the same
    message continues its count.
    """

    def __init__(
        self, settings: ConsumerSettings, *, poll_budget: float, clock: Callable[[], float]
    ) -> None:
        self._settings = settings
        self._poll_budget = poll_budget
        self._clock = clock
        self._retrying: dict[tuple[str, int, int], Retrying] = {}

    def get(self, msg: Message) -> Retrying | None:
        """The message's record, if it has failed before."""
        return self._retrying.get(position(msg))

    def forget(self, msg: Message) -> None:
        """The message is done with (applied, dead-lettered or ignored)."""
        self._retrying.pop(position(msg), None)

    def count_attempt(self, msg: Message) -> Retrying:
        """Record one more failed attempt at the message; its record, first failure included."""
        now = self._clock()
        retrying = self._retrying.get(position(msg))
        # A record not touched for longer than any wait between attempts is from before
        # the partition went to another consumer and came back: its budget starts again.
        stale_after = 2 * self._settings.retry_backoff_max + self._poll_budget * 2
        if retrying is None or now - retrying.last > stale_after:
            retrying = self._retrying[position(msg)] = Retrying(since=now, last=now)
        retrying.attempts += 1
        retrying.last = now
        return retrying

    def spent(self, retrying: Retrying, failing_for: float) -> bool:
        """Whether the message has had all the attempts, or all the time, it may have."""
        settings = self._settings
        if settings.max_attempts is not None and retrying.attempts >= settings.max_attempts:
            return True
        return failing_for >= settings.retry_for

    def delay(self, attempts: int) -> float:
        """Backoff after a handler's n-th RetryableError: doubling, capped, with jitter."""
        initial, cap = self._settings.backoff_initial, self._settings.retry_backoff_max
        delay: float = min(initial * 2.0 ** min(attempts - 1, 30), cap)
        return delay * random.uniform(0.8, 1.0)
