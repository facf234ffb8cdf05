"""Samples the backlog once a second: sagas in flight, outbox rows pending, consumer lag."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from saga_harness.group_lag import GroupLag
from saga_runtime import KafkaSettings
from saga_system import SYSTEM

__all__ = ["BacklogSampler", "Sample", "growth"]


@dataclass(frozen=True)
class Sample:
    at: float
    in_flight: int  # accepted orders not yet in a final state
    outbox_pending: int
    consumer_lag: int


@dataclass
class BacklogSampler:
    database_url: str
    kafka: KafkaSettings
    in_flight: Callable[[], int]
    services: Sequence[str] = tuple(SYSTEM.consumers())
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-backlog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        pending = sql.SQL(" + ").join(
            sql.SQL(
                "(SELECT count(*) FROM {}.outbox WHERE published_at IS NULL AND failed_at IS NULL)"
            ).format(sql.Identifier(s))
            for s in self.services
        )
        lag = GroupLag(self.kafka, self.services)
        try:
            # Named, so the bench's CPU split counts its backend as the harness's.
            with psycopg.connect(
                self.database_url, autocommit=True, application_name="bench:backlog"
            ) as conn:
                while not self._stop.wait(1.0):
                    row = conn.execute(sql.SQL("SELECT ") + pending).fetchone()
                    self.samples.append(
                        Sample(
                            at=time.time(),
                            in_flight=self.in_flight(),
                            outbox_pending=int(row[0]) if row else 0,
                            consumer_lag=lag.total(),
                        )
                    )
        finally:
            lag.close()


def growth(samples: Sequence[Sample], attribute: str, start: float, end: float) -> float:
    """Least-squares slope of ``attribute`` over [start, end], in units per second."""
    points = [(s.at, float(getattr(s, attribute))) for s in samples if start <= s.at <= end]
    if len(points) < 3:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var
