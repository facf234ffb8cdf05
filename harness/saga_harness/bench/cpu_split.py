"""PostgreSQL's CPU split by who its backends serve, and the whole machine's, over a window.

PostgreSQL is one process tree, so ``cpu.py`` sees it whole; but some of its
backends serve the harness (the provider simulator's ledger, the bench's own
queries), not the system under test. At each end of the window the bench maps
backend pids to their ``application_name`` (``pg_stat_activity``) and reads each
one's own utime + stime from /proc. A backend's share:

- there at both ends (same pid and start time): its CPU between the two readings;
- connected within the window (only at the end): all of its CPU, all of it spent
  within the window;
- there at the start and gone at the end: its CPU after the first reading went to
  the postmaster's cutime/cstime when it was reaped and cannot be told apart any
  more, so it falls into ``postgres (other)``; so does a backend that came and
  went between the readings, and one not (yet) listed in ``pg_stat_activity``.

``postgres (other)`` is the tree's total minus the named shares: the postmaster,
the background processes (checkpointer, WAL writer, autovacuum) and the above. It
is counted in the system under test, so the split never flatters the system.
A backend is grouped by its name up to the first ``:`` (``orders:wakeup`` is
``orders``; a relay's ``relay-0:stock`` is ``relay-0``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psycopg

__all__ = [
    "OTHER",
    "BackendNames",
    "BackendSample",
    "BackendSplit",
    "MachineTicks",
    "backend_label",
    "read_machine",
    "role_sums",
    "sample_backends",
    "split_backends",
]

OTHER = "postgres (other)"
UNNAMED = "unnamed"

# Client backends only: the server's own processes have no application_name and are "other".
_ACTIVITY = (
    "SELECT pid, application_name FROM pg_stat_activity WHERE backend_type = 'client backend'"
)


def backend_label(application_name: str) -> str:
    """The group a backend's CPU is reported under: ``postgres (<name before ':'>)``."""
    base = application_name.split(":", 1)[0].strip() or UNNAMED
    return f"postgres ({base})"


class _Stat(Protocol):
    """What a backend's reading needs of ``cpu.ProcStat``."""

    @property
    def pid(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def utime(self) -> int: ...
    @property
    def stime(self) -> int: ...
    @property
    def starttime(self) -> int: ...


@dataclass(frozen=True)
class BackendSample:
    """One backend at one reading: its identity (start time), own CPU ticks and group."""

    starttime: int
    ticks: int
    label: str


def sample_backends(members: Iterable[_Stat], names: Mapping[int, str]) -> dict[int, BackendSample]:
    """The named ones among ``members`` (the server's descendants): pid -> their reading.

    ``names`` maps pids to ``application_name``; a member that is not named (a
    background process, a backend not yet listed) is left out: it counts as "other".
    """
    found: dict[int, BackendSample] = {}
    for stat in members:
        name = names.get(stat.pid)
        if name is None or stat.state in ("Z", "X"):
            continue
        found[stat.pid] = BackendSample(
            stat.starttime, stat.utime + stat.stime, backend_label(name)
        )
    return found


@dataclass(frozen=True)
class BackendSplit:
    """Ticks per group over the window, and how many backends came and went."""

    ticks: dict[str, int]
    started: int  # connected within the window: counted whole
    exited: int  # gone by its end: their last part is in "other"


def split_backends(
    first: Mapping[int, BackendSample], last: Mapping[int, BackendSample]
) -> BackendSplit:
    """Each group's ticks between the two readings (see the module's doc for who counts how)."""
    ticks: dict[str, int] = {}
    started = 0
    for pid, end in last.items():
        start = first.get(pid)
        if start is not None and start.starttime == end.starttime:
            used = max(0, end.ticks - start.ticks)
        else:
            used, started = end.ticks, started + 1
        ticks[end.label] = ticks.get(end.label, 0) + used
    exited = sum(
        1
        for pid, start in first.items()
        if pid not in last or last[pid].starttime != start.starttime
    )
    return BackendSplit(ticks, started, exited)


@dataclass(frozen=True)
class MachineTicks:
    """The first line of /proc/stat: every core's busy and total time, in clock ticks."""

    busy: int
    total: int


def read_machine(proc: Path) -> MachineTicks | None:
    """All cores' time from ``proc``/stat; busy leaves out idle and iowait (None: unreadable)."""
    try:
        line = (proc / "stat").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = line.split()
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user already).
    values = [int(v) for v in fields[1:9]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return MachineTicks(busy=sum(values) - idle, total=sum(values))


class BackendNames:
    """``pg_stat_activity`` on one connection of its own, named ``bench:cpu`` (the harness's).

    Kept open for the whole window, so reading the names does not start a backend each time.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn: psycopg.Connection | None = None

    def __call__(self) -> dict[int, str]:
        """pid -> application_name of every client backend ("" when unnamed)."""
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.database_url, autocommit=True, application_name="bench:cpu"
            )
        rows = self._conn.execute(_ACTIVITY).fetchall()
        return {int(pid): str(name or "") for pid, name in rows}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def role_sums(
    cpu_s: Mapping[str, float], harness: Collection[str]
) -> tuple[dict[str, float], dict[str, list[str]]]:
    """CPU seconds of the system under test and of the harness, and which labels each holds."""
    members: dict[str, list[str]] = {"system_under_test": [], "harness": []}
    for label in cpu_s:
        members["harness" if label in harness else "system_under_test"].append(label)
    sums = {role: sum(cpu_s[label] for label in labels) for role, labels in members.items()}
    return sums, members
