"""Latency summaries: nearest-rank percentiles over every sample (no sampling, no histograms)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["percentile", "summarize"]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def summarize(values: Iterable[float], *, scale: float = 1000.0) -> dict[str, float | int]:
    """count, mean, p50, p95, p99 and max, multiplied by ``scale`` (seconds to ms by default)."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "mean": round(sum(ordered) / len(ordered) * scale, 2),
        "p50": round(percentile(ordered, 50) * scale, 2),
        "p95": round(percentile(ordered, 95) * scale, 2),
        "p99": round(percentile(ordered, 99) * scale, 2),
        "max": round(ordered[-1] * scale, 2),
    }
