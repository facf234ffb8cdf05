"""Restarts processes that died: killed by a fault, by their own crash point, or by a bug."""

from __future__ import annotations

import threading
from collections import Counter

from saga_harness.system import System


class Watchdog:
    """Every ``interval``, starts again any process that is not running and not held down.

    Deaths are classified by exit: SIGKILL the harness sent (``killed``), SIGKILL
    a process sent itself at a crash point (``crash_points``), anything else
    (``unexpected``: a bug, reported as a failure).
    """

    # A supervisor restarts a dead process at once (systemd's RestartSec is 100 ms): at
    # 15 orders/s the crash points kill payments every few seconds, and each half second
    # waited here was a tenth of its time.
    def __init__(self, system: System, *, interval: float = 0.1) -> None:
        self._system = system
        self._interval = interval
        self._held: set[str] = set()
        self._killing: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-watchdog", daemon=True)
        self.killed: Counter[str] = Counter()
        self.crash_points: Counter[str] = Counter()
        self.unexpected: list[tuple[str, int]] = []

    def kill(self, name: str, *, hold: bool = False) -> None:
        """SIGKILL ``name``; with ``hold`` it stays down until ``release``."""
        with self._lock:
            self._killing.add(name)
            if hold:
                self._held.add(name)
        self._system.processes[name].kill()

    def release(self, name: str) -> None:
        with self._lock:
            self._held.discard(name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.revive()

    def revive(self) -> None:
        for name, process in self._system.processes.items():
            with self._lock:
                if name in self._held or process.alive or process.popen is None:
                    continue
                code = process.popen.returncode
                if name in self._killing:
                    self._killing.discard(name)
                    self.killed[name] += 1
                elif code == -9:
                    self.crash_points[name] += 1
                else:
                    self.unexpected.append((name, code))
                process.start()
