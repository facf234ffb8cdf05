"""The dashboard's numbers, computed from one ``Readings``: what ``sagactl top`` shows and
what ``--json`` prints.

A number the metrics do not give (the process that counts it is not read, or has counted
nothing yet) is ``None``: ``—`` on screen, ``null`` in JSON, never a 0 that was not measured.
Every outbox and consumer of the system definition has its entry, read or not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sagactl.top.readings import Readings, Sample, histogram_quantile

__all__ = ["ConsumerView", "EffectView", "OutboxView", "Snapshot", "build_snapshot"]

FAILED_RESULTS = ("failed", "retry")


@dataclass
class OutboxView:
    """One service's outbox: what waits in it, and which relay publishes it."""

    pending_rows: float | None = None
    oldest_pending_age_s: float | None = None
    # The processes (Prometheus jobs) whose relay leads this outbox now: one when healthy.
    active_relays: list[str] = field(default_factory=list)
    relays_reporting: list[str] = field(default_factory=list)
    publish_p99_s: float | None = None


@dataclass
class ConsumerView:
    """One service's consumers: events applied, dead letters, lag per topic."""

    applied_per_s: float | None = None
    dead_letters: float | None = None  # since its processes started
    dead_letters_per_s: float | None = None
    lag_messages: dict[str, float] = field(default_factory=dict)  # topic -> messages behind


@dataclass
class EffectView:
    """One kind of call to the outside world of one service."""

    calls_per_s: float = 0.0
    error_ratio: float | None = None  # failed or to be retried, of all calls; None: no calls


@dataclass
class Snapshot:
    """One frame of ``sagactl top``."""

    source: str
    at: datetime
    rate_window_s: float
    quantile_window_s: float
    targets: dict[str, bool]
    finished_per_s: dict[str, float]  # by final state
    finished_reasons: dict[str, dict[str, float]]  # final state -> reason -> per second
    duration_p50_s: float | None
    duration_p99_s: float | None
    stuck_sagas: float | None
    outboxes: dict[str, OutboxView]
    consumers: dict[str, ConsumerView]
    effects: dict[str, dict[str, EffectView]]  # service -> kind -> view

    @property
    def finished_total_per_s(self) -> float | None:
        return sum(self.finished_per_s.values()) if self.finished_per_s else None

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document (its keys are documented in the README; keep them stable)."""
        return {
            "source": self.source,
            "at": self.at.isoformat(),
            "rate_window_s": self.rate_window_s,
            "quantile_window_s": self.quantile_window_s,
            "targets": {job: "up" if up else "down" for job, up in sorted(self.targets.items())},
            "sagas": {
                "finished_per_s": self.finished_total_per_s,
                "finished_per_s_by_state": dict(sorted(self.finished_per_s.items())),
                "finished_per_s_by_reason": {
                    state: dict(sorted(reasons.items()))
                    for state, reasons in sorted(self.finished_reasons.items())
                },
                "duration_p50_s": self.duration_p50_s,
                "duration_p99_s": self.duration_p99_s,
                "stuck": self.stuck_sagas,
            },
            "outboxes": {name: asdict(view) for name, view in self.outboxes.items()},
            "consumers": {name: asdict(view) for name, view in self.consumers.items()},
            "effects": {
                service: {kind: asdict(view) for kind, view in sorted(kinds.items())}
                for service, kinds in sorted(self.effects.items())
            },
        }


def _sum_by(samples: Iterable[Sample], *labels: str) -> dict[tuple[str, ...], float]:
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for sample in samples:
        sums[tuple(sample.labels.get(label, "") for label in labels)] += sample.value
    return dict(sums)


def _quantiles(
    samples: Iterable[Sample], by: str | None, qs: Sequence[float]
) -> dict[str, list[float | None]]:
    """Per value of label ``by`` (all together if None), the quantiles ``qs`` of the
    histogram whose ``_bucket`` rates are ``samples``."""
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for sample in samples:
        key = sample.labels.get(by, "") if by else ""
        buckets[key][float(sample.labels.get("le", "+Inf"))] += sample.value
    return {
        key: [histogram_quantile(q, per_le.items()) for q in qs] for key, per_le in buckets.items()
    }


def _max_by_service(samples: Iterable[Sample]) -> dict[str, float]:
    # Every process of a service reads the same outbox: they agree, or the latest is larger.
    found: dict[str, float] = {}
    for sample in samples:
        service = sample.labels.get("service", "")
        found[service] = max(found.get(service, sample.value), sample.value)
    return found


def _outboxes(readings: Readings, names: Sequence[str]) -> dict[str, OutboxView]:
    pending = _max_by_service(readings.of("gauges", "saga_outbox_pending_rows"))
    oldest = _max_by_service(readings.of("gauges", "saga_outbox_oldest_pending_age_seconds"))
    p99 = _quantiles(
        readings.of("rates", "saga_relay_publish_latency_seconds_bucket"), "service", [0.99]
    )
    views: dict[str, OutboxView] = {}
    for service in [*names, *sorted(set(pending) - set(names))]:
        views[service] = OutboxView(
            pending_rows=pending.get(service),
            oldest_pending_age_s=oldest.get(service),
            publish_p99_s=p99.get(service, [None])[0],
        )
    for sample in readings.of("gauges", "saga_relay_active"):
        view = views.setdefault(sample.labels.get("service", ""), OutboxView())
        job = sample.labels.get("job", "?")
        view.relays_reporting = sorted({*view.relays_reporting, job})
        if sample.value == 1:
            view.active_relays = sorted({*view.active_relays, job})
    return views


def _consumers(readings: Readings, names: Sequence[str]) -> dict[str, ConsumerView]:
    events = readings.of("rates", "saga_consumer_events_total")
    applied = _sum_by((s for s in events if s.labels.get("outcome") == "applied"), "service")
    dead_rates = _sum_by(
        (s for s in events if s.labels.get("outcome") == "dead_lettered"), "service"
    )
    dead_totals = _sum_by(
        (
            s
            for s in readings.of("totals", "saga_consumer_events_total")
            if s.labels.get("outcome") == "dead_lettered"
        ),
        "service",
    )
    seen = _sum_by(events, "service")  # any outcome: the service's consumers are read
    lag = _sum_by(readings.of("gauges", "saga_consumer_lag_messages"), "service", "topic")
    views: dict[str, ConsumerView] = {}
    extra = {key[0] for key in [*seen, *lag]} - set(names)
    for service in [*names, *sorted(extra)]:
        read = (service,) in seen
        views[service] = ConsumerView(
            applied_per_s=applied.get((service,), 0.0 if read else None),
            dead_letters=dead_totals.get((service,), 0.0 if read else None),
            dead_letters_per_s=dead_rates.get((service,), 0.0 if read else None),
            lag_messages={
                topic: value for (owner, topic), value in sorted(lag.items()) if owner == service
            },
        )
    return views


def _effects(readings: Readings) -> dict[str, dict[str, EffectView]]:
    calls = _sum_by(readings.of("rates", "saga_effect_calls_total"), "service", "kind", "result")
    views: dict[str, dict[str, EffectView]] = defaultdict(dict)
    failing: dict[tuple[str, str], float] = defaultdict(float)
    for (service, kind, result), rate in calls.items():
        view = views[service].setdefault(kind, EffectView())
        view.calls_per_s += rate
        if result in FAILED_RESULTS:
            failing[(service, kind)] += rate
    for service, kinds in views.items():
        for kind, view in kinds.items():
            if view.calls_per_s > 0:
                view.error_ratio = failing[(service, kind)] / view.calls_per_s
    return dict(views)


def build_snapshot(
    readings: Readings,
    *,
    source: str,
    outboxes: Sequence[str] = (),
    consumers: Sequence[str] = (),
    at: datetime | None = None,
) -> Snapshot:
    """The frame ``readings`` make; ``outboxes`` and ``consumers`` (the system definition's)
    get an entry each even when no metric mentions them."""
    finished = _sum_by(readings.of("rates", "saga_finished_total"), "state", "reason")
    by_state: dict[str, float] = defaultdict(float)
    reasons: dict[str, dict[str, float]] = defaultdict(dict)
    for (state, reason), rate in finished.items():
        by_state[state] += rate
        reasons[state][reason] = rate
    p50, p99 = _quantiles(
        readings.of("rates", "saga_duration_seconds_bucket"), None, [0.5, 0.99]
    ).get("", [None, None])
    stuck = [sample.value for sample in readings.of("gauges", "saga_stuck_sagas")]
    return Snapshot(
        source=source,
        at=at or datetime.now(UTC),
        rate_window_s=readings.rate_window_s,
        quantile_window_s=readings.quantile_window_s,
        targets=dict(readings.targets),
        finished_per_s=dict(by_state),
        finished_reasons=dict(reasons),
        duration_p50_s=p50,
        duration_p99_s=p99,
        stuck_sagas=max(stuck) if stuck else None,
        outboxes=_outboxes(readings, outboxes),
        consumers=_consumers(readings, consumers),
        effects=_effects(readings),
    )
