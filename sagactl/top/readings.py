"""What a source reads from the metrics, before any dashboard arithmetic: current gauge
values, counters' per-second rates over a window, counters' current totals and whether each
scraped process answered. Both sources (Prometheus's HTTP API, the processes' ``/metrics``)
produce this, so everything after it is computed and tested once.

Each sample carries its series' labels; the process it came from is the label ``job`` (as
Prometheus names scrape targets), so two relays' ``saga_relay_active`` stay apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Readings", "Sample", "histogram_quantile"]


@dataclass(frozen=True)
class Sample:
    """One series' value: its metric name, labels and value."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass
class Readings:
    """One reading of the system's metrics.

    ``rates`` are per-second rates of counters over ``rate_window_s`` (a histogram's
    ``_bucket`` series over ``quantile_window_s``, a longer window, as quantiles of a few
    seconds' worth of sagas jump about); ``totals`` are counters' values now.
    """

    gauges: list[Sample] = field(default_factory=list)
    rates: list[Sample] = field(default_factory=list)
    totals: list[Sample] = field(default_factory=list)
    targets: dict[str, bool] = field(default_factory=dict)
    rate_window_s: float = 0.0
    quantile_window_s: float = 0.0

    def of(self, kind: str, name: str) -> list[Sample]:
        """The samples of metric ``name`` among ``gauges``, ``rates`` or ``totals``."""
        samples: list[Sample] = getattr(self, kind)
        return [sample for sample in samples if sample.name == name]


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q``-quantile of a histogram given as (upper bound ``le``, cumulative count or
    rate) pairs, interpolated linearly inside the bucket the way Prometheus's
    ``histogram_quantile`` does; None when the histogram is empty or has no ``+Inf`` bucket.

    A rank in the ``+Inf`` bucket answers the highest finite bound (we know no more).
    """
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0 or math.isnan(total):
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower if len(ordered) > 1 else None
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return None
