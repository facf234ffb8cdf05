"""Tells when a Kafka consumer has stopped making progress by itself.

librdkafka recovers from a broker restart on its own, nearly always. Rarely
(a broker killed while a new member's JoinGroup waits on it, see the chaos
suite) a consumer stays out of its group or leaves assigned partitions
unfetched for good, while the process looks healthy: the saga then waits for
ever. The runner feeds librdkafka's statistics here and, once the consumer has
not been in its group and fetching every assigned partition for a while,
replaces it with a new one (which joins the group again and resumes from the
committed offsets; the inbox makes any replay harmless).

A consumer librdkafka declares failed for good (a fatal error) is replaced at
once instead: a static member (``group.instance.id``) is fenced when the broker
restarts and its own rejoin registers a new member id (the chaos suite's broker
kills did this to every static consumer, which then waited out the stall
detection). A consumer fenced again soon after its replacement is sharing its
id with another live one: each replacement then waits longer (``fenced``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ConsumerHealth", "StatsCallback"]

StatsCallback = Callable[[str], None]

# A replacement fenced again this soon (seconds) shares its group.instance.id with a live
# member: a few of librdkafka's 3 s heartbeats.
_FENCED_AGAIN_WITHIN = 15.0


class ConsumerHealth:
    """Reads librdkafka statistics (``stats_cb``); says when the consumer has stalled."""

    def __init__(
        self,
        *,
        stall_after: float,
        clock: Callable[[], float] = time.monotonic,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._stall_after = stall_after
        # Also given the parsed statistics (the metrics' consumer lag): parsed once for both.
        self._listener = on_stats
        self._clock = clock
        self._group: tuple[str, str] | None = None  # (state, join_state); None: no stats yet
        self._fetch: dict[tuple[str, int], str] = {}
        self._fine_since = clock()
        self._last_fine: float | None = None  # when last seen in its group and fetching
        self._assigned: list[tuple[str, int]] | None = None  # as last given to ``stalled``
        # Replacements after fatal errors that came soon after the previous one (kept
        # across ``reset``: the point is to see them repeat).
        self._fenced_streak = 0
        self._last_fenced: float | None = None

    def on_stats(self, raw: str) -> None:
        """librdkafka's ``stats_cb`` (served by ``poll``, on the consuming thread)."""
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        cgrp = stats.get("cgrp")
        if isinstance(cgrp, dict):
            self._group = (str(cgrp.get("state")), str(cgrp.get("join_state")))
        self._fetch = dict(_fetch_states(stats))
        if self._listener is not None and isinstance(stats, dict):
            self._listener(stats)

    def problem(self, assigned: Iterable[tuple[str, int]]) -> str | None:
        """What keeps the consumer from progressing now, per the last statistics (or None)."""
        if self._group is None:
            return None
        state, join_state = self._group
        if state != "up" or join_state != "steady":
            return f"consumer group state {state}, join state {join_state}"
        idle = sorted(
            f"{topic}[{partition}] {fetch}"
            for topic, partition in assigned
            if (fetch := self._fetch.get((topic, partition), "unknown")) != "active"
        )
        if idle:
            return "assigned partitions not fetching: " + ", ".join(idle)
        return None

    def stalled(self, assigned: Iterable[tuple[str, int]]) -> str | None:
        """The problem, once it has lasted ``stall_after`` seconds; else None."""
        assigned = list(assigned)
        self._assigned = assigned
        problem = self.problem(assigned)
        now = self._clock()
        if problem is None:
            self._fine_since = now
            if self._group is not None:
                self._last_fine = now
            return None
        if now - self._fine_since < self._stall_after:
            return None
        return problem

    def readiness(self, *, grace: float) -> str | None:
        """For ``/readyz``: None when ready, else why not (safe from any thread).

        Ready once the consumer has been seen in its group (state up, join
        state steady) and fetching every partition it holds; it stays ready
        through a problem shorter than ``grace`` seconds, so a rebalance
        (partitions revoked and assigned again within seconds) does not flap
        readiness. It reads what the consuming thread last recorded (the
        statistics, and the assignment ``stalled`` was given, both at most a
        few seconds old): a librdkafka consumer must not be asked for its
        assignment from another thread while it polls (that call blocks).
        """
        now = self._clock()
        assigned = self._assigned
        if self._group is None:
            problem: str | None = "no statistics from librdkafka yet (joining its group)"
        elif assigned is None:
            problem = "assignment not read yet"
        else:
            problem = self.problem(assigned)
        if problem is None:
            self._last_fine = now
            return None
        if self._last_fine is not None and now - self._last_fine < grace:
            return None
        return problem

    def fenced(self) -> float:
        """The consumer failed for good: seconds to wait before replacing it.

        0 the first time; a fatal error again within ``_FENCED_AGAIN_WITHIN`` of the
        last replacement waits 1, 3, 7, ... seconds (at most ``stall_after``): two live
        members with one ``group.instance.id`` fence each other within a heartbeat or two
        of each replacement, and must not do it in a loop. (Broker restarts a minute apart
        are not that: each replacement is at once.)
        """
        now = self._clock()
        recent = self._last_fenced is not None and now - self._last_fenced < _FENCED_AGAIN_WITHIN
        self._fenced_streak = self._fenced_streak + 1 if recent else 0
        delay = float(min(self._stall_after, 2**self._fenced_streak - 1))
        self._last_fenced = now + delay  # when its replacement starts
        return delay

    def reset(self) -> None:
        """A new consumer: it gets ``stall_after`` to join and fetch before it is judged."""
        self._group = None
        self._fetch = {}
        self._fine_since = self._clock()
        self._last_fine = None
        self._assigned = None


def _fetch_states(stats: dict[str, Any]) -> Iterable[tuple[tuple[str, int], str]]:
    topics = stats.get("topics")
    if not isinstance(topics, dict):
        return
    for topic, detail in topics.items():
        for key, partition in (detail.get("partitions") or {}).items():
            if key != "-1" and isinstance(partition, dict):
                yield (topic, int(key)), str(partition.get("fetch_state"))
