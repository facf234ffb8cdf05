"""Exponential backoff with jitter, shared by the consumer runner and the relay."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays that double from ``initial`` up to ``maximum``; ``reset`` after a success."""

    initial: float
    maximum: float
    _current: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._current = self.initial if self._current == 0 else min(self._current * 2, self.maximum)
        # Jitter keeps several processes from retrying in lockstep after an outage.
        return self._current * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self._current = 0.0
