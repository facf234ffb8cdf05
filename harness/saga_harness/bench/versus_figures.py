"""The comparison's arithmetic: runs pooled per workload and relay, and the table of ratios.

Pure (no I/O), so that what the table says can be checked with made-up runs. Latency
percentiles are taken over every measured event of every round pooled together, not
averaged across rounds; CPU per event is all CPU seconds over all events of the windows;
drain rates are the mean of the rounds (each round's is kept too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from saga_harness.bench.stats import summarize

__all__ = ["RatioRow", "correctness_failures", "pool_runs", "ratio_rows", "render_ratios"]

OURS, DEBEZIUM = "ours", "debezium"
CPU_LABELS = ("relay", "postgres", "kafka")


def pool_runs(
    runs: Sequence[Mapping[str, Any]], latencies: Mapping[tuple[str, str], Sequence[float]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """workload -> relay -> pooled figures, from runs ``{"workload", "relay", "figures"}``.

    ``latencies`` holds each (workload, relay)'s measured commit -> ack seconds, all rounds.
    """
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["workload"], run["relay"]), []).append(run["figures"])
    pooled: dict[str, dict[str, dict[str, Any]]] = {}
    for (workload, relay), figures in grouped.items():
        entry: dict[str, Any] = {"rounds": len(figures)}
        rates = [float(f["events_per_s"]) for f in figures if "events_per_s" in f]
        if rates:
            entry["events_per_s"] = round(sum(rates) / len(rates), 1)
            entry["events_per_s_rounds"] = rates
        if (workload, relay) in latencies:
            entry["commit_to_ack_ms"] = summarize(latencies[(workload, relay)])
            entry["achieved_rate_rounds"] = [f.get("achieved_rate") for f in figures]
        entry["cpu_ms_per_event"] = _cpu_per_event(figures)
        entry["arrivals"] = {
            key: sum(int(f["arrivals"][key]) for f in figures)
            for key in ("expected", "missing", "duplicates", "unexpected", "order_violations")
        }
        pooled.setdefault(workload, {})[relay] = entry
    return pooled


def _cpu_per_event(figures: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    events = sum(int(f["cpu"]["events"]) for f in figures)
    for label in CPU_LABELS:
        seconds = [f["cpu"]["processes"].get(label, {}).get("cpu_s") for f in figures]
        if events <= 0 or any(s is None for s in seconds):
            result[label] = None  # a round without the figure makes the sum wrong
        else:
            result[label] = round(1000 * sum(float(s) for s in seconds) / events, 4)
    return result


@dataclass(frozen=True)
class RatioRow:
    """One line of the table: a figure for both relays, and ours ÷ Debezium's."""

    workload: str
    metric: str
    ours: float | None
    debezium: float | None
    higher_is_better: bool

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.debezium is None or self.debezium == 0:
            return None
        return self.ours / self.debezium

    @property
    def winner(self) -> str:
        if self.ours is None or self.debezium is None or self.ours == self.debezium:
            return "-"
        ours_better = (self.ours > self.debezium) == self.higher_is_better
        return OURS if ours_better else DEBEZIUM

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "workload": self.workload,
            "metric": self.metric,
            OURS: self.ours,
            DEBEZIUM: self.debezium,
            "ratio_ours_to_debezium": None if ratio is None else round(ratio, 3),
            "better": self.winner,
        }


def ratio_rows(pooled: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[RatioRow]:
    """The table's rows, workload by workload, in the order the workloads ran."""
    rows: list[RatioRow] = []
    for workload, relays in pooled.items():
        ours, theirs = relays.get(OURS, {}), relays.get(DEBEZIUM, {})

        def row(
            metric: str, a: Any, b: Any, *, higher: bool = False, workload: str = workload
        ) -> None:
            rows.append(RatioRow(workload, metric, a, b, higher))

        if "events_per_s" in ours or "events_per_s" in theirs:
            row("events/s", ours.get("events_per_s"), theirs.get("events_per_s"), higher=True)
        if "commit_to_ack_ms" in ours or "commit_to_ack_ms" in theirs:
            for p in ("p50", "p95", "p99"):
                row(
                    f"commit→ack {p} ms",
                    ours.get("commit_to_ack_ms", {}).get(p),
                    theirs.get("commit_to_ack_ms", {}).get(p),
                )
        for label in CPU_LABELS:
            row(
                f"{label} CPU ms/event",
                ours.get("cpu_ms_per_event", {}).get(label),
                theirs.get("cpu_ms_per_event", {}).get(label),
            )
    return rows


def correctness_failures(pooled: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """One line per workload and relay that lost an event, reordered one or invented one."""
    failures = []
    for workload, relays in pooled.items():
        for relay, entry in relays.items():
            a = entry["arrivals"]
            if a["missing"] or a["order_violations"] or a["unexpected"]:
                failures.append(
                    f"{workload} {relay}: {a['missing']} missing, {a['order_violations']} out of"
                    f" order, {a['unexpected']} unexpected (of {a['expected']})"
                )
    return failures


def _cell(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def render_ratios(rows: Sequence[RatioRow]) -> str:
    """The table as Markdown: workload, figure, ours, Debezium, ours ÷ Debezium, better."""
    lines = [
        "| workload | figure | ours | Debezium | ours ÷ Debezium | better |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = r.ratio
        lines.append(
            f"| {r.workload} | {r.metric} | {_cell(r.ours)} | {_cell(r.debezium)} | "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'} | {r.winner} |"
        )
    return "\n".join(lines)
