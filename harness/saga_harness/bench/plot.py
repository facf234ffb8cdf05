"""The latency-versus-rate plot of a sweep (PNG, via matplotlib's non-interactive backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_sweep"]


def plot_sweep(results: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """End-to-end p50 and p99 (log scale) against the offered rate, completions alongside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(
        (r for r in results if r["end_to_end_ms"].get("count")), key=lambda r: r["offered_rate"]
    )
    rates = [r["offered_rate"] for r in points]
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    ax.plot(rates, [r["end_to_end_ms"]["p50"] for r in points], "o-", label="end-to-end p50")
    ax.plot(rates, [r["end_to_end_ms"]["p99"] for r in points], "s-", label="end-to-end p99")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (orders/s, open loop)")
    ax.set_ylabel("submit -> final state (ms)")
    ax.grid(True, which="both", alpha=0.3)
    done = ax.twinx()
    done.plot(
        rates,
        [r["completed_per_second"] for r in points],
        "^--",
        color="tab:green",
        label="completed sagas/s",
    )
    done.set_ylabel("completed sagas/s")
    lines = ax.get_legend_handles_labels()[0] + done.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + done.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
