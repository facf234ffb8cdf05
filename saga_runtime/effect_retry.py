"""When a failed effect is tried again, and when it has failed for good (pure, no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from saga_runtime.errors import RetryableError

__all__ = ["RetryPolicy", "is_retryable"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Capped exponential backoff between attempts, as Temporal's activities have.

    The effect's deadline (``EffectKind.deadline``) bounds the retries in time;
    ``maximum_attempts`` (None: unbounded) can bound them in number too.
    """

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta = timedelta(seconds=60)
    maximum_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial_interval <= timedelta(0) or self.maximum_interval < self.initial_interval:
            raise ValueError("RetryPolicy needs 0 < initial_interval <= maximum_interval")
        if self.backoff_coefficient < 1.0:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1")
        if self.maximum_attempts is not None and self.maximum_attempts < 1:
            raise ValueError("RetryPolicy.maximum_attempts must be at least 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1 for the first).

        Computed from the attempt number stored with the effect, not from a
        counter in memory, so another executor that takes the effect over
        continues the same schedule. Jitter keeps effects that failed together
        (one outage) from all being tried again in the same instant.
        """
        initial = self.initial_interval.total_seconds()
        maximum = self.maximum_interval.total_seconds()
        exponent = max(0, attempt - 1)
        # Capped before it can overflow: 2.0 ** 2000 is not a float.
        if exponent > 64:
            capped = maximum
        else:
            capped = min(initial * self.backoff_coefficient**exponent, maximum)
        return capped * random.uniform(0.8, 1.0)

    def attempts_left(self, attempt: int) -> bool:
        """Whether another attempt is allowed after attempt number ``attempt``."""
        return self.maximum_attempts is None or attempt < self.maximum_attempts


def is_retryable(exc: BaseException) -> bool:
    """A ``RetryableError`` may pass (a timeout, a 5xx, a refused connection); any other
    exception raised by a call is a terminal failure at once (a refusal, a bug).

    A call translates its client's transient errors into ``RetryableError``; the
    runtime does not know any client library.
    """
    return isinstance(exc, RetryableError)
