"""The relay benchmark's arithmetic: what arrived against what was written, and how soon."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from saga_harness.bench.stats import summarize

__all__ = [
    "DRAIN_TARGET_PER_S",
    "STEADY_P99_TARGET_MS",
    "ArrivalCheck",
    "check_arrivals",
    "commit_to_ack",
    "per_second",
]

DRAIN_TARGET_PER_S = 10_000.0
STEADY_P99_TARGET_MS = 20.0


@dataclass(frozen=True)
class ArrivalCheck:
    """What a reader of the topic saw, against what was written."""

    expected: int
    messages: int  # every message read, duplicates included
    arrived: int  # distinct expected event ids among them
    duplicates: int  # messages carrying an event id already seen
    unexpected: int  # messages whose event id was never written
    order_violations: int  # first deliveries of an aggregate's events not in written order

    @property
    def missing(self) -> int:
        return self.expected - self.arrived

    def as_dict(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "messages": self.messages,
            "arrived": self.arrived,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "order_violations": self.order_violations,
        }


def check_arrivals(
    written: Mapping[str, tuple[str, int]], delivered: Iterable[str]
) -> ArrivalCheck:
    """Compare event ids read from the topic (in partition order) with what was written.

    ``written`` maps each event id to (aggregate, its position among that
    aggregate's events). An aggregate's events share a key, hence a partition,
    so their first deliveries must come in written order; a duplicate (at
    least once) may come later and is only counted.
    """
    seen: set[str] = set()
    last: dict[str, int] = {}
    messages = duplicates = unexpected = violations = 0
    for event_id in delivered:
        messages += 1
        where = written.get(event_id)
        if where is None:
            unexpected += 1
            continue
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        aggregate, position = where
        if position < last.get(aggregate, -1):
            violations += 1
        else:
            last[aggregate] = position
    return ArrivalCheck(
        expected=len(written),
        messages=messages,
        arrived=len(seen),
        duplicates=duplicates,
        unexpected=unexpected,
        order_violations=violations,
    )


def commit_to_ack(
    committed: Mapping[str, float], appended: Mapping[str, float], *, since: float = 0.0
) -> list[float]:
    """Seconds from each commit (at or after ``since``) to the broker's first append of it."""
    return [
        appended[event_id] - at
        for event_id, at in committed.items()
        if at >= since and event_id in appended
    ]


def per_second(
    committed: Mapping[str, float], appended: Mapping[str, float], *, start: float
) -> list[dict[str, float | int]]:
    """Commit-to-ack summary for each second of the run (by commit time): where the tail was."""
    seconds: dict[int, list[float]] = {}
    for event_id, at in committed.items():
        if event_id in appended:
            seconds.setdefault(int(at - start), []).append(appended[event_id] - at)
    return [{"second": n, **summarize(values)} for n, values in sorted(seconds.items())]
