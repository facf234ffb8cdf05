"""CPU time per process over the saga benchmark's measured window, read from /proc.

Two snapshots of the process table, one at each end of the window; the figures are
the differences. What a label counts:

- a plain target (a service, Kafka's JVM, the bench client): that process's utime +
  stime, every thread of it included;
- a tree target (PostgreSQL): the root and every descendant present at the snapshot,
  each with utime + stime + cutime + cstime. A backend that exits is reaped by the
  postmaster, whose cutime/cstime take over its CPU, so the tree's total runs on
  without a jump: backends that come and go within the window are counted whole, and
  one that was there at the start and exited is counted from the start only. (A
  child that is never waited for, or is orphaned to init, would take its time with
  it; the postmaster waits for all of its children.)

A root that is missing at either end, or was replaced (another start time), makes
its label unavailable rather than wrong; without /proc the whole section is.

The PostgreSQL tree is then split by whom its backends serve, the labels are added up
into the system under test and the harness, and the machine's CPU from /proc/stat is
set beside them (``cpu_split``). ``cpu_window.CpuWindow`` takes the snapshots.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saga_harness.bench.cpu_split import (
    OTHER,
    BackendSample,
    MachineTicks,
    role_sums,
    split_backends,
)

__all__ = [
    "PROC",
    "ProcStat",
    "Reading",
    "Target",
    "cpu_figures",
    "descendants",
    "parse_stat",
    "read_process_table",
    "take_readings",
]

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the figures need (times in clock ticks)."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    starttime: int


@dataclass(frozen=True)
class Target:
    """A process to account for; ``tree`` adds its descendants and the children it reaped."""

    pid: int | None
    tree: bool = False


@dataclass(frozen=True)
class Reading:
    """One label at one snapshot: the root's start time (its identity) and CPU ticks."""

    starttime: int
    ticks: int


# A label's reading, or why there is none.
Readings = dict[str, Reading | str]


def parse_stat(text: str) -> ProcStat:
    """Parse a ``/proc/<pid>/stat`` line.

    The command name sits in parentheses and may itself hold spaces and parentheses
    (a PostgreSQL backend's title, a thread name), so the fields are split after the
    *last* ``)``.
    """
    head, sep, tail = text.rpartition(")")
    if not sep or " (" not in head:
        raise ValueError(f"not a /proc stat line: {text[:80]!r}")
    pid, comm = head.split(" (", 1)
    fields = tail.split()
    if len(fields) < 20:
        raise ValueError(f"short /proc stat line: {text[:80]!r}")
    return ProcStat(
        pid=int(pid),
        comm=comm,
        state=fields[0],
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
        starttime=int(fields[19]),
    )


def read_process_table(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process's stat under ``proc``; ones that exit while being read are skipped."""
    table: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError):
            continue  # gone between listing and reading, or not a process
        table[stat.pid] = stat
    return table


def descendants(table: Mapping[int, ProcStat], root: int) -> set[int]:
    """The pids below ``root`` in ``table`` (children, their children, ...), root excluded."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found and child != root:
                found.add(child)
                stack.append(child)
    return found


def take_readings(targets: Mapping[str, Target], table: Mapping[int, ProcStat]) -> Readings:
    """Each target's CPU ticks in ``table``, or the reason it has none."""
    readings: Readings = {}
    for label, target in targets.items():
        root = table.get(target.pid) if target.pid is not None else None
        if target.pid is None:
            readings[label] = "not running"
        elif root is None or root.state in ("Z", "X"):
            readings[label] = f"pid {target.pid} not running"
        elif target.tree:
            members = [root, *(table[p] for p in descendants(table, root.pid))]
            ticks = sum(s.utime + s.stime + s.cutime + s.cstime for s in members)
            readings[label] = Reading(root.starttime, ticks)
        else:
            readings[label] = Reading(root.starttime, root.utime + root.stime)
    return readings


def cpu_figures(
    first: Readings,
    last: Readings,
    *,
    seconds: float,
    completed: int,
    ticks_per_second: int,
    cores: int | None,
    backends: tuple[Mapping[int, BackendSample], Mapping[int, BackendSample]] | None = None,
    postgres: str = "postgres",
    machine: tuple[MachineTicks | None, MachineTicks | None] | None = None,
    harness: Collection[str] = (),
) -> dict[str, Any]:
    """Per label: CPU seconds, % of one core and CPU ms per completed saga (JSON-able).

    Labels come largest first; ``total`` adds up the available ones only.
    ``backends`` (each end's named backends, ``cpu_split``) replaces the ``postgres``
    tree's figure by its groups and ``postgres (other)``. ``system_under_test`` and
    ``harness`` add up the labels by role (``harness``: the harness's labels, all
    others are the system's). ``machine`` (/proc/stat at each end) adds every core's
    busy time, and what of it none of the labels used (``elsewhere``).
    """
    cpu_s: dict[str, float] = {}
    unavailable: dict[str, str] = {}
    for label, start in first.items():
        end = last.get(label, "not read")
        if isinstance(start, str):
            unavailable[label] = f"{start} at the start of the window"
        elif isinstance(end, str):
            unavailable[label] = f"{end} at the end of the window"
        elif end.starttime != start.starttime:
            unavailable[label] = "restarted during the window"
        else:
            cpu_s[label] = (end.ticks - start.ticks) / ticks_per_second

    def figures(used: float) -> dict[str, float | None]:
        return {
            "cpu_s": round(used, 2),
            "pct_of_core": round(100 * used / seconds, 1) if seconds > 0 else None,
            "ms_per_saga": round(1000 * used / completed, 2) if completed else None,
        }

    result: dict[str, Any] = {}
    if backends is not None and postgres in cpu_s:
        split = split_backends(*backends)
        tree = cpu_s.pop(postgres)
        named = {label: ticks / ticks_per_second for label, ticks in split.ticks.items()}
        cpu_s.update(named)
        cpu_s[OTHER] = max(0.0, tree - sum(named.values()))
        result["postgres"] = {
            **figures(tree),
            "backends_connected_in_window": split.started,
            "backends_gone_in_window": split.exited,
        }
    total = sum(cpu_s.values())
    sums, members = role_sums(cpu_s, harness)
    result.update(
        {
            role: {**figures(sums[role]), "labels": sorted(members[role])}
            for role in ("system_under_test", "harness")
        }
    )
    if machine is not None and machine[0] is not None and machine[1] is not None:
        busy = (machine[1].busy - machine[0].busy) / ticks_per_second
        span = machine[1].total - machine[0].total
        result["machine"] = {
            **figures(busy),
            "pct_of_cores": round(100 * (machine[1].busy - machine[0].busy) / span, 1)
            if span > 0
            else None,
            "elsewhere_cpu_s": round(busy - total, 2),
        }

    return {
        "available": bool(cpu_s),
        "seconds": round(seconds, 2),
        "completed_sagas": completed,
        "cores": cores,
        "clock_ticks_per_second": ticks_per_second,
        "processes": {
            label: figures(used) for label, used in sorted(cpu_s.items(), key=lambda item: -item[1])
        },
        "total": figures(total),
        **result,
        "unavailable": unavailable,
    }
