"""The supervisor: spawns its children, restarts the ones that crash or hang, stops them all.

One monitor thread spawns, reaps and terminates; another probes the children's health
endpoints. Both share the children's state under one lock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Collection
from pathlib import Path
from types import FrameType

import httpx

from saga_harness.infra.proc import Logger, read_pidfile, wait_until, write_pidfile
from saga_harness.supervisor.children import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    HEALTH_INTERVAL_S,
    HEALTH_TIMEOUT_S,
    STABLE_AFTER_S,
    START_GRACE_S,
    STOP_TIMEOUT_S,
    UNHEALTHY_AFTER_S,
    Child,
    ProcessSpec,
    die_with_parent,
    fetch,
)
from saga_harness.supervisor.pidfile import supervisor_pid, supervisor_pidfile

__all__ = ["Supervisor"]


class Supervisor:
    """Starts each ``ProcessSpec`` as a child and restarts the ones that exit unexpectedly.

    Child output (stdout and stderr) is appended to ``<log_dir>/<name>.log``. Restarts use
    exponential backoff from 0.5s doubling to 10s, reset once a child has stayed up for 30s.
    All spawning, reaping and terminating happens on one monitor thread.

    Children with a ``health_url`` are probed every ``health_interval`` seconds on another
    thread: one whose ``/healthz`` has not answered 200 for ``unhealthy_after`` seconds (or
    never, ``start_grace`` seconds after it started) is hung, e.g. stopped or deadlocked:
    it is killed (SIGKILL; it would not act on SIGTERM) and restarted like a crashed one.
    Until a child's ``/readyz`` has answered 200, it is probed there instead, and its
    readiness is logged once; ``wait_ready`` waits for every child's.

    A child's environment is this process's, less the ``withheld`` names, plus its spec's.
    """

    def __init__(
        self,
        specs: list[ProcessSpec],
        log_dir: Path,
        *,
        state_dir: Path | None = None,
        log: Logger = print,
        poll_interval: float = 0.1,
        health_interval: float = HEALTH_INTERVAL_S,
        health_timeout: float = HEALTH_TIMEOUT_S,
        unhealthy_after: float = UNHEALTHY_AFTER_S,
        start_grace: float = START_GRACE_S,
        withheld: Collection[str] = (),
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"process names must be unique: {names}")
        self.log_dir = Path(log_dir)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.log = log
        self.poll_interval = poll_interval
        self._children = {s.name: Child(s) for s in specs}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_timeout = STOP_TIMEOUT_S
        self._lock = threading.Lock()
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.unhealthy_after = unhealthy_after
        self.start_grace = start_grace
        # Variables of this process's environment that no child inherits: only a spec that
        # sets one passes it on (each process gets its own secrets, not everyone's).
        self.withheld = frozenset(withheld)
        self._health_thread: threading.Thread | None = None

    # -- public ------------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn all children and begin monitoring them on a background thread."""
        if self._thread is not None:
            raise RuntimeError("supervisor already started")
        if self.state_dir is not None:
            other = supervisor_pid(self.state_dir)
            if other is not None and other != os.getpid():
                raise RuntimeError(
                    f"another supervisor (pid {other}) already runs for {self.state_dir}"
                )
            write_pidfile(supervisor_pidfile(self.state_dir), os.getpid())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._monitor, args=(started,), name="supervisor", daemon=True
        )
        self._thread.start()
        started.wait()
        if any(c.spec.health_url for c in self._children.values()):
            self._health_thread = threading.Thread(
                target=self._watch_health, name="supervisor-health", daemon=True
            )
            self._health_thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every child, wait up to ``timeout`` seconds, SIGKILL the rest."""
        self._stop_timeout = timeout
        self._stopping.set()
        if self._health_thread is not None:
            self._health_thread.join()
            self._health_thread = None
        if self._thread is not None:
            self._thread.join()  # the monitor thread terminates the children it spawned
            self._thread = None
        if (
            self.state_dir is not None
            and read_pidfile(supervisor_pidfile(self.state_dir)) == os.getpid()
        ):
            supervisor_pidfile(self.state_dir).unlink(missing_ok=True)

    def run_until_signalled(self) -> None:
        """Start, block until SIGINT or SIGTERM, then stop everything (the ``up`` loop)."""
        received = threading.Event()

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.log(f"received {signal.Signals(signum).name}; stopping")
            received.set()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not received.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, old in previous.items():
                signal.signal(sig, old)

    def pids(self) -> dict[str, int | None]:
        """Current pid of each child (None while it is down or waiting to restart)."""
        with self._lock:
            return {
                name: (c.proc.pid if c.proc is not None and c.proc.poll() is None else None)
                for name, c in self._children.items()
            }

    def restart_counts(self) -> dict[str, int]:
        """How many times each child has been restarted after an unexpected exit."""
        with self._lock:
            return {name: c.restarts for name, c in self._children.items()}

    def ready(self) -> dict[str, bool]:
        """Whether each child with a ``health_url`` has answered ``/readyz`` with 200 since
        it last started."""
        with self._lock:
            return {n: c.ready for n, c in self._children.items() if c.spec.health_url}

    def wait_ready(self, timeout: float) -> bool:
        """Until every child with a ``health_url`` is ready (True), or ``timeout`` (False)."""
        return wait_until(lambda: all(self.ready().values()), timeout=timeout, interval=0.2)

    # -- internals ---------------------------------------------------------------------------
    def _monitor(self, started: threading.Event) -> None:
        try:
            for child in self._children.values():
                self._spawn(child)
        finally:
            started.set()
        try:
            while not self._stopping.wait(self.poll_interval):
                now = time.monotonic()
                for child in self._children.values():
                    self._check(child, now)
        finally:
            # Done on this thread: children die with the thread that spawned them (PDEATHSIG).
            self._terminate_all(self._stop_timeout)

    def _check(self, child: Child, now: float) -> None:
        if child.proc is not None:
            code = child.proc.poll()
            if code is None and child.hung:
                self.log(
                    f"{child.spec.name} (pid {child.proc.pid}) is hung: /healthz has failed for"
                    f" {self.unhealthy_after:.0f}s ({child.health_problem}); killing it"
                )
                child.proc.kill()
                code = child.proc.wait()
            if code is None:
                return
            uptime = now - child.started_at
            if uptime >= STABLE_AFTER_S:
                child.backoff = BACKOFF_INITIAL_S
            delay = child.backoff
            child.backoff = min(child.backoff * 2, BACKOFF_MAX_S)
            child.restart_at = now + delay
            with self._lock:
                child.proc = None
            self._close_log(child)
            self.log(
                f"{child.spec.name} exited with code {code} after {uptime:.1f}s; "
                f"restarting in {delay:.1f}s"
            )
        elif child.restart_at is not None and now >= child.restart_at:
            child.restarts += 1
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        spec = child.spec
        log_path = self.log_dir / f"{spec.name}.log"
        handle = log_path.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(
            f"\n=== {stamp} supervisor starting {spec.name}: {' '.join(spec.argv)}\n".encode()
        )
        handle.flush()
        inherited = {k: v for k, v in os.environ.items() if k not in self.withheld}
        env = {**inherited, "PYTHONUNBUFFERED": "1", **(spec.env or {})}
        try:
            proc = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as exc:
            handle.write(f"=== cannot start: {exc}\n".encode())
            handle.close()
            self.log(f"cannot start {spec.name}: {exc}")
            child.restart_at = time.monotonic() + child.backoff
            child.backoff = min(child.backoff * 2, BACKOFF_MAX_S)
            return
        with self._lock:
            child.proc = proc
            child.hung = child.ready = False
            child.health_problem = None
            child.health_deadline = time.monotonic() + self.start_grace
        child.log_handle = handle
        child.started_at = time.monotonic()
        child.restart_at = None
        self.log(f"started {spec.name} (pid {proc.pid}, log {log_path})")

    def _watch_health(self) -> None:
        # trust_env=False: a proxy from the environment must not sit between us and a child.
        with httpx.Client(timeout=self.health_timeout, trust_env=False) as client:
            while not self._stopping.wait(self.health_interval):
                for child in self._children.values():
                    if child.spec.health_url is not None and not self._stopping.is_set():
                        self._probe(client, child, child.spec.health_url)

    def _probe(self, client: httpx.Client, child: Child, url: str) -> None:
        with self._lock:
            proc, ready = child.proc, child.ready
        if proc is None or proc.poll() is not None:
            return
        problem: str | None = None
        if not ready and fetch(client, f"{url}/readyz")[0]:
            ready = True
            self.log(f"{child.spec.name} is ready")
            if all(r or name == child.spec.name for name, r in self.ready().items()):
                self.log("every process is ready")
        else:
            ok, problem = fetch(client, f"{url}/healthz")
            problem = None if ok else problem
        now = time.monotonic()
        with self._lock:
            if child.proc is not proc:
                return  # restarted meanwhile: this answer was about the old one
            child.ready = ready
            if problem is None:
                child.health_deadline = now + self.unhealthy_after
                child.health_problem = None
            else:
                child.health_problem = problem
                child.hung = child.hung or now >= child.health_deadline

    def _terminate_all(self, timeout: float) -> None:
        running = [
            c for c in self._children.values() if c.proc is not None and c.proc.poll() is None
        ]
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
                child.proc.send_signal(signal.SIGCONT)
        wait_until(
            lambda: all(c.proc is None or c.proc.poll() is not None for c in running),
            timeout=timeout,
            interval=0.05,
        )
        for child in running:
            assert child.proc is not None
            if child.proc.poll() is None:
                self.log(f"{child.spec.name} did not stop within {timeout:.0f}s; SIGKILL")
                child.proc.kill()
                child.proc.wait()
        for child in self._children.values():
            with self._lock:
                child.proc = None
            child.restart_at = None
            self._close_log(child)

    @staticmethod
    def _close_log(child: Child) -> None:
        handle = child.log_handle
        child.log_handle = None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()
