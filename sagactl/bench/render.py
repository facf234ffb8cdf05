"""Human-readable summaries of benchmark results (the JSON has everything)."""

from __future__ import annotations

from typing import Any

__all__ = ["saga_summary"]


def _latency(name: str, s: dict[str, Any]) -> str:
    if not s.get("count"):
        return f"  {name:<58} (no samples)"
    return (
        f"  {name:<58} p50 {s['p50']:8.1f}  p95 {s['p95']:8.1f}  p99 {s['p99']:8.1f}"
        f"  max {s['max']:8.1f} ms"
    )


def saga_summary(result: dict[str, Any]) -> str:
    backlog = result.get("backlog", {})
    lines = [
        f"offered {result['offered_rate']}/s, completed {result['completed_per_second']}/s "
        f"({result['measured_sagas']} sagas measured, finished {result['finished']}, "
        f"unfinished {result['unfinished']}, rejected {result['rejected']})",
        f"backlog grew: {backlog.get('grew')} (in flight {backlog.get('in_flight_growth_per_s')}"
        f"/s, max {backlog.get('max_in_flight')}; consumer lag max "
        f"{backlog.get('max_consumer_lag')}; outbox pending max "
        f"{backlog.get('max_outbox_pending')})",
        _latency("end to end (submit -> final state at the broker)", result["end_to_end_ms"]),
        _latency("relay (written -> broker ack), every event", result["relay_ms"]),
        *(_latency(name, s) for name, s in result["hops_ms"].items()),
    ]
    if "violations" in result:
        lines.append(f"violations: {len(result['violations'])} {result['violations'][:3]}")
    return "\n".join(lines)
