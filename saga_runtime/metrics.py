"""Prometheus metrics of the runtime: what it counts, and the calls that count it.

The runtime's parts call the functions below (never ``prometheus_client`` directly), so the
names, labels and buckets live in one place. Labels are bounded: services, event types the
service handles, effect kinds, topic-partitions, route templates; never an id. The consumer
counts once per batch (a dict of tallies, then one ``inc`` per label set), so the cost per
event is a dictionary update. ``set_enabled(False)`` turns every recording into a no-op (the bench
measures the instrumentation's cost with it).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "consumer_batch",
    "consumer_lag",
    "consumer_rebalanced",
    "consumer_renewed",
    "effect_called",
    "enabled",
    "relay_active",
    "relay_delivered",
    "saga_finished",
    "set_enabled",
    "timed_handler",
]

# Latency buckets from 5 ms to 2 min: a saga step takes milliseconds, a slow dependency or
# an outage seconds to minutes.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONSUMER_EVENTS = Counter(
    "saga_consumer_events_total",
    "Events a service's consumers processed, by what came of them.",
    ["service", "event_type", "outcome"],
)
CONSUMER_BATCH_SECONDS = Histogram(
    "saga_consumer_batch_duration_seconds",
    "Time to apply one polled batch (transaction, handlers, commit).",
    ["service"],
    buckets=_SECONDS,
)
CONSUMER_BATCH_SIZE = Histogram(
    "saga_consumer_batch_size",
    "Messages per polled batch.",
    ["service"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
CONSUMER_HANDLER_SECONDS = Histogram(
    "saga_consumer_handler_duration_seconds",
    "Time in one event's handler (its reads and decisions; its writes go at the batch's flush).",
    ["service", "event_type"],
    buckets=_SECONDS,
)
CONSUMER_REBALANCES = Counter(
    "saga_consumer_rebalances_total",
    "Consumer group rebalances the service's consumers went through (librdkafka statistics).",
    ["service"],
)
CONSUMER_LAG = Gauge(
    "saga_consumer_lag_messages",
    "Messages behind the end of each assigned partition (librdkafka statistics).",
    ["service", "topic", "partition"],
)
CONSUMER_RENEWALS = Counter(
    "saga_consumer_renewals_total",
    "Kafka consumers replaced because they stalled out of their group.",
    ["service"],
)
RELAY_ACTIVE = Gauge(
    "saga_relay_active",
    "1 while this relay process is the active (leading) relay of the service's outbox.",
    ["service"],
)
RELAY_PUBLISHED = Counter(
    "saga_relay_rows_published_total", "Outbox rows the broker acknowledged.", ["service"]
)
RELAY_FAILED = Counter(
    "saga_relay_rows_failed_total", "Outbox rows the broker refused for good.", ["service"]
)
RELAY_LATENCY = Histogram(
    "saga_relay_publish_latency_seconds",
    "From the outbox row's transaction to the broker's acknowledgement.",
    ["service"],
    buckets=_SECONDS,
)
EFFECT_CALLS = Counter(
    "saga_effect_calls_total",
    "Calls to the outside world, by result (ok, failed for good, retry later).",
    ["service", "kind", "result"],
)
EFFECT_SECONDS = Histogram(
    "saga_effect_duration_seconds",
    "Duration of one call to the outside world.",
    ["service", "kind"],
    buckets=_SECONDS,
)
SAGAS_FINISHED = Counter(
    "saga_finished_total",
    "Sagas that reached a final state, by state and reason.",
    ["state", "reason"],
)
SAGA_SECONDS = Histogram(
    "saga_duration_seconds",
    "From a saga's start to its final state.",
    ["state"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)

_enabled = True


def set_enabled(on: bool) -> None:
    """Record (True) or record nothing from now on (``METRICS_ENABLED=false``)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    """Whether recordings count (the /metrics endpoints are served either way)."""
    return _enabled


def consumer_batch(
    service: str,
    event_types: Sequence[str],
    outcomes: Iterable[str | None],
    seconds: float,
) -> None:
    """One polled batch: what came of each message (``None``: not processed), and its time.

    ``event_types[i]`` is the type of the i-th processed message, ``"other"`` for a type
    the service does not handle (so a forged header cannot grow the label set).
    """
    if not _enabled:
        return
    tally = Tally(
        (event_type, outcome)
        for event_type, outcome in zip(event_types, outcomes, strict=False)
        if outcome is not None
    )
    for (event_type, outcome), count in tally.items():
        CONSUMER_EVENTS.labels(service, event_type, outcome).inc(count)
    CONSUMER_BATCH_SECONDS.labels(service).observe(seconds)
    CONSUMER_BATCH_SIZE.labels(service).observe(len(event_types))


def consumer_lag(
    service: str, lags: Mapping[tuple[str, int], int], previous: Iterable[tuple[str, int]]
) -> None:
    """Set the lag of each partition a consumer holds; drop those it no longer holds."""
    if not _enabled:
        return
    for topic, partition in set(previous) - set(lags):
        with contextlib.suppress(KeyError):  # never set (no lag known yet)
            CONSUMER_LAG.remove(service, topic, str(partition))
    for (topic, partition), lag in lags.items():
        CONSUMER_LAG.labels(service, topic, str(partition)).set(lag)


def lags_from_stats(stats: Mapping[str, Any]) -> dict[tuple[str, int], int]:
    """Per assigned partition, its consumer lag from librdkafka's statistics (known ones)."""
    found: dict[tuple[str, int], int] = {}
    topics = stats.get("topics")
    if not isinstance(topics, dict):
        return found
    for topic, detail in topics.items():
        for key, partition in (detail.get("partitions") or {}).items():
            if key == "-1" or not isinstance(partition, dict):
                continue
            lag = partition.get("consumer_lag")
            if isinstance(lag, int) and lag >= 0:
                found[(topic, int(key))] = lag
    return found


def timed_handler(
    service: str, event_type: str, handler: Callable[..., None]
) -> Callable[..., None]:
    """``handler``, timed into ``saga_consumer_handler_duration_seconds`` (itself when metrics
    are off: nothing is added to its calls)."""
    if not _enabled:
        return handler
    histogram = CONSUMER_HANDLER_SECONDS.labels(service, event_type)
    clock = time.perf_counter

    def timed(*args: Any) -> None:
        started = clock()
        try:
            handler(*args)
        finally:
            histogram.observe(clock() - started)

    return timed


def consumer_rebalanced(service: str, count: int) -> None:
    """``count`` more rebalances."""
    if _enabled and count > 0:
        CONSUMER_REBALANCES.labels(service).inc(count)


def consumer_renewed(service: str) -> None:
    """A stalled Kafka consumer was replaced."""
    if _enabled:
        CONSUMER_RENEWALS.labels(service).inc()


def relay_active(service: str, active: bool) -> None:
    """This process now leads (or no longer leads) the relaying of ``service``'s outbox."""
    if _enabled:
        RELAY_ACTIVE.labels(service).set(1 if active else 0)


def relay_delivered(service: str, latencies: Iterable[float], failed: int) -> None:
    """A relayed batch: each acknowledged row's commit-to-ack latency, and rows refused."""
    if not _enabled:
        return
    histogram = RELAY_LATENCY.labels(service)
    count = 0
    for seconds in latencies:
        histogram.observe(seconds)
        count += 1
    if count:
        RELAY_PUBLISHED.labels(service).inc(count)
    if failed:
        RELAY_FAILED.labels(service).inc(failed)


def effect_called(service: str, kind: str, result: str, seconds: float) -> None:
    """One call to the outside world: ``result`` is ok, failed or retry."""
    if _enabled:
        EFFECT_CALLS.labels(service, kind, result).inc()
        EFFECT_SECONDS.labels(service, kind).observe(seconds)


def saga_finished(state: str, reason: str, seconds: float) -> None:
    """A saga reached its final ``state`` for ``reason`` (a bounded word), ``seconds`` after
    it began."""
    if _enabled:
        SAGAS_FINISHED.labels(state, reason).inc()
        SAGA_SECONDS.labels(state).observe(seconds)
