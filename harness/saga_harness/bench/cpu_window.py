"""The saga benchmark's CPU window: a snapshot at each end, taken from a thread of its own."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saga_harness.bench.cpu import (
    PROC,
    Readings,
    Target,
    cpu_figures,
    descendants,
    read_process_table,
    take_readings,
)
from saga_harness.bench.cpu_split import BackendSample, MachineTicks, read_machine, sample_backends

__all__ = ["CpuWindow"]


@dataclass
class CpuWindow:
    """Snapshots the targets' CPU at two moments from a thread of its own.

    The moments are fixed in advance (the window is the load's, minus the warmup), so
    the snapshots land on time whatever the load loop is doing. With ``backend_names``
    (pid -> application_name, e.g. ``cpu_split.BackendNames``) the ``postgres`` tree is
    split by backend; ``harness`` names the labels that are the harness's, not the
    system's; the machine's CPU comes from ``proc``/stat.
    """

    targets: Mapping[str, Target]
    proc: Path = PROC
    backend_names: Callable[[], Mapping[int, str]] | None = None
    postgres: str = "postgres"
    harness: Collection[str] = ()
    first: Readings | None = None
    last: Readings | None = None
    first_at: float = 0.0
    last_at: float = 0.0
    backends: list[dict[int, BackendSample] | None] = field(default_factory=list)
    machine: list[MachineTicks | None] = field(default_factory=list)
    split_error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, *, start_at: float, end_at: float) -> None:
        """Snapshot at ``start_at`` and at ``end_at`` (epoch seconds)."""
        self._thread = threading.Thread(
            target=self._run, args=(start_at, end_at), name="bench-cpu", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop waiting; a snapshot not yet taken stays missing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, start_at: float, end_at: float) -> None:
        try:
            if self._stop.wait(max(0.0, start_at - time.time())):
                return
            self.first_at, self.first = time.time(), self._readings()
            if self._stop.wait(max(0.0, end_at - time.time())):
                return
            self.last_at, self.last = time.time(), self._readings()
        finally:
            close = getattr(self.backend_names, "close", None)
            if close is not None:
                close()

    def _readings(self) -> Readings:
        names = self._names()  # before /proc: a backend that starts in between is "other"
        try:
            table = read_process_table(self.proc)
        except OSError:
            table = {}
        self.machine.append(read_machine(self.proc))
        root = self.targets.get(self.postgres)
        if names is None or root is None or root.pid is None or root.pid not in table:
            self.backends.append(None)
        else:
            members = (table[pid] for pid in descendants(table, root.pid))
            self.backends.append(sample_backends(members, names))
        return take_readings(self.targets, table)

    def _names(self) -> Mapping[int, str] | None:
        if self.backend_names is None:
            return None
        try:
            return self.backend_names()
        except Exception as exc:  # the split is lost, not the figures: say why
            self.split_error = f"backend names unreadable: {exc!r}"[:300]
            return None

    def figures(
        self, completed_at: Iterable[float], *, cores: int | None, load_started: float
    ) -> dict[str, Any]:
        """The section for the result: sagas count if they completed between the snapshots.

        ``window_s`` places the snapshots in seconds from ``load_started``.
        """
        if not self.proc.joinpath("self", "stat").exists():
            return {"available": False, "reason": f"no {self.proc}/self/stat (not Linux?)"}
        if self.first is None or self.last is None:
            return {"available": False, "reason": "the window did not run to its end"}
        completed = sum(1 for at in completed_at if self.first_at <= at <= self.last_at)
        first_b, last_b = [*self.backends, None, None][:2]
        figures = cpu_figures(
            self.first,
            self.last,
            seconds=self.last_at - self.first_at,
            completed=completed,
            ticks_per_second=os.sysconf("SC_CLK_TCK"),
            cores=cores,
            backends=None if first_b is None or last_b is None else (first_b, last_b),
            postgres=self.postgres,
            machine=(self.machine[0], self.machine[1]) if len(self.machine) == 2 else None,
            harness=self.harness,
        )
        if self.backend_names is not None and "postgres" not in figures:
            figures["postgres_split_unavailable"] = self.split_error or "no backend readings"
        window = [round(self.first_at - load_started, 2), round(self.last_at - load_started, 2)]
        return {**figures, "window_s": window}
