"""Human-readable summaries of benchmark results (the JSON has everything)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saga_harness.bench.relay_figures import DRAIN_TARGET_PER_S, STEADY_P99_TARGET_MS

__all__ = ["relay_summary", "saga_summary"]

# The relay settings worth a place in the summary line (the JSON has them all).
_SHOWN_RELAY_SETTINGS = ("batch_size", "poll_interval")


def _latency(name: str, s: Mapping[str, Any], *, width: int = 58, counted: bool = False) -> str:
    if not s.get("count"):
        return f"  {name:<{width}} (no samples)"
    return (
        f"  {name:<{width}} p50 {s['p50']:8.1f}  p95 {s['p95']:8.1f}  p99 {s['p99']:8.1f}"
        f"  max {s['max']:8.1f} ms" + (f"  ({s['count']} events)" if counted else "")
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
        *_cpu_table(result.get("cpu")),
    ]
    if "violations" in result:
        lines.append(f"violations: {len(result['violations'])} {result['violations'][:3]}")
    return "\n".join(lines)


def _cpu_table(cpu: Mapping[str, Any] | None) -> list[str]:
    """CPU over the measured window, % of one core and ms per saga: each process (PostgreSQL
    by whom its backends serve), grouped into the system under test and the harness, then
    the whole machine."""
    if cpu is None:
        return []
    if not cpu.get("available"):
        reason = cpu.get("reason") or "; ".join(
            f"{label}: {why}" for label, why in cpu.get("unavailable", {}).items()
        )
        return [f"cpu: unavailable ({reason})"]

    def row(label: str, f: Mapping[str, Any], indent: int = 2) -> str:
        pct = "-" if f["pct_of_core"] is None else f"{f['pct_of_core']:.1f}"
        per_saga = "-" if f["ms_per_saga"] is None else f"{f['ms_per_saga']:.1f}"
        return f"{' ' * indent}{label:<{38 - indent}}{pct:>12}{per_saga:>14}"

    head = f"cpu (measured window {cpu['seconds']:.1f} s, {cpu['cores']} cores)"
    lines = [f"{head:<38}{'% of a core':>12}{'ms per saga':>14}"]
    processes = cpu["processes"]
    for role, title in (("system_under_test", "system under test"), ("harness", "harness")):
        if role not in cpu:
            continue
        lines.append(row(title, cpu[role]))
        lines += [
            row(label, processes[label], 4) for label in processes if label in cpu[role]["labels"]
        ]
    if "system_under_test" not in cpu:
        lines += [row(label, f) for label, f in processes.items()]
    lines.append(row("total counted", cpu["total"]))
    machine = cpu.get("machine")
    if machine:
        lines.append(
            row("machine (/proc/stat, every process)", machine)
            + f"  ({machine['pct_of_cores']}% of the cores; {machine['elsewhere_cpu_s']} s"
            " elsewhere)"
        )
    postgres = cpu.get("postgres")
    if postgres:
        lines.append(
            f"  postgres split by backend (whole tree {postgres['cpu_s']} s;"
            f" {postgres['backends_connected_in_window']} backends connected and"
            f" {postgres['backends_gone_in_window']} gone in the window)"
        )
    elif cpu.get("postgres_split_unavailable"):
        lines.append(f"  postgres not split: {cpu['postgres_split_unavailable']}")
    lines += [f"  not counted: {label} ({why})" for label, why in cpu["unavailable"].items()]
    return lines


def relay_summary(result: Mapping[str, Any]) -> str:
    """``sagactl bench relay``'s figures against its targets."""
    relay = result["relay"]
    settings = relay["settings"]
    shown = [f"{k}={settings[k]}" for k in _SHOWN_RELAY_SETTINGS if k in settings]
    linger = relay.get("producer_config", {}).get("linger.ms")
    if linger is not None:
        shown.append(f"linger.ms={linger}")
    lines = [f"relay ({relay['mode']}): " + ", ".join(shown)]
    drain = result.get("drain")
    if drain:
        kafka = drain["kafka"]
        verdict = "meets" if drain["meets_target"] else "MISSES"
        lines.append(
            f"drain: {drain['rows']} rows in {drain['elapsed_s']:.2f}s = "
            f"{drain['events_per_s']:,.0f} events/s ({verdict} the {DRAIN_TARGET_PER_S:,.0f}/s "
            f"target); arrived {kafka['arrived']}/{kafka['expected']}, "
            f"{kafka['duplicates']} duplicates, {kafka['order_violations']} out of order, "
            f"{drain['failed']} failed"
        )
    steady = result.get("steady")
    if steady:
        verdict = "meets" if steady["meets_target"] else "MISSES"
        lines += [
            f"steady: {steady['emitted']} events at {steady['achieved_rate']:,.0f}/s "
            f"(asked {steady['rate']:g}/s for {steady['duration']:g}s, {steady['writers']} "
            f"writers); seen {steady['seen']}/{steady['emitted']}; p99 {verdict} the "
            f"{STEADY_P99_TARGET_MS:g} ms target",
            *(
                _latency(name, steady[key], width=28, counted=True)
                for name, key in (
                    ("commit -> broker append", "commit_to_ack_ms"),
                    ("commit -> marked published", "commit_to_mark_ms"),
                    ("writer: commit duration", "commit_ms"),
                )
            ),
        ]
    return "\n".join(lines)
