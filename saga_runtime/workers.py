"""Named worker threads whose unexpected end takes the whole process down.

A process whose background thread has died (a consumer runner, a sweeper, a
relay thread) while its HTTP server still answers looks healthy to everyone and
has silently stopped doing its work. So every long-lived thread of a process is
started here: when one raises, or returns before the process asked it to stop,
the failure is logged with its traceback and ``on_failure`` runs, which makes
the process stop its other parts and exit non-zero; its supervisor (``./dev
up``, compose, systemd) then starts a fresh one.
"""

from __future__ import annotations

import contextvars
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType

from saga_runtime.logs import get_logger

__all__ = ["Worker", "Workers", "run_workers", "stop_on_signals"]

log = get_logger(__name__)

_SIGNAL_CHECK_INTERVAL = 0.5  # seconds: the longest a signal handler may wait to run


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Worker:
    """A long-lived task: ``run`` blocks until ``stop`` (thread-safe) makes it return."""

    name: str
    run: Callable[[], None]
    stop: Callable[[], None] = field(default=_nothing)


class Workers:
    """Runs workers on threads of their own and watches every one of them.

    A worker that ends while ``stop`` has not been called is a failure: the
    first one is recorded (``failure``), logged as ``worker.died`` with its
    traceback, and reported to ``on_failure`` (called on the dying thread; it
    must only wake the process's main loop, e.g. set a flag).
    """

    def __init__(self, *, on_failure: Callable[[str], None] | None = None) -> None:
        self._on_failure = on_failure
        self._stopping = threading.Event()
        self._done = threading.Event()  # stopping, or a worker failed
        # Reentrant: ``stop`` runs in signal handlers, which interrupt the main thread
        # wherever it is, possibly inside ``start``.
        self._lock = threading.RLock()
        self._threads: dict[str, threading.Thread] = {}
        self._workers: list[Worker] = []
        self._failure: str | None = None

    def start(self, worker: Worker) -> None:
        """Start ``worker`` on a thread named after it, in a copy of this context (log fields)."""
        with self._lock:
            if worker.name in self._threads:
                raise ValueError(f"a worker named {worker.name!r} already runs")
            thread = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._run, worker),
                name=worker.name,
                daemon=True,
            )
            self._threads[worker.name] = thread
            self._workers.append(worker)
        thread.start()

    def stop(self) -> None:
        """Ask every worker to return (their ends are expected from now on); does not wait."""
        self._stopping.set()
        self._done.set()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            try:
                worker.stop()
            except Exception:
                log.exception("worker.stop_failed", worker=worker.name)

    def join(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds in all for the threads; the names still running."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [name for name, thread in self._threads.items() if thread.is_alive()]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``stop`` or a failure (True), or ``timeout`` passes (False)."""
        return self._done.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def failure(self) -> str | None:
        """The first worker that ended unexpectedly, and how (None while all are fine)."""
        return self._failure

    def problem(self) -> str | None:
        """For liveness: why this process is not alive and well (None: every worker runs)."""
        if self._failure is not None:
            return self._failure
        with self._lock:
            dead = [name for name, thread in self._threads.items() if not thread.is_alive()]
        if dead and not self._stopping.is_set():
            return "worker threads not running: " + ", ".join(sorted(dead))
        return None

    def names(self) -> list[str]:
        with self._lock:
            return list(self._threads)

    def _run(self, worker: Worker) -> None:
        try:
            worker.run()
        except BaseException as exc:
            self._fail(worker.name, f"{worker.name} raised {exc!r}", exc)
            return
        if not self._stopping.is_set():
            self._fail(worker.name, f"{worker.name} returned while the process was running", None)

    def _fail(self, name: str, what: str, exc: BaseException | None) -> None:
        with self._lock:
            first = self._failure is None
            if first:
                self._failure = what
        # The traceback is the one thing an operator needs to fix the cause.
        log.error("worker.died", worker=name, failure=what, exc_info=exc)
        self._done.set()
        if first and self._on_failure is not None:
            try:
                self._on_failure(name)
            except Exception:
                log.exception("worker.on_failure_failed", worker=name)


def stop_on_signals(stop: Callable[[], None], *, name: str) -> None:
    """On SIGTERM/SIGINT, log ``<name>.stopping`` and call ``stop`` (it must be signal-safe).

    Only the main thread can take signals; elsewhere (a test, or an embedder that runs a
    process's parts on a thread of its own and stops them itself) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info(f"{name}.stopping", signal=signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run_workers(
    watched: Workers,
    workers: Iterable[Worker],
    *,
    name: str,
    on_signal: Callable[[], None] | None = None,
    wait: Callable[[], object] | None = None,
    install_signal_handlers: bool = True,
    join_timeout: float = 30.0,
    closers: Iterable[Callable[[], object]] = (),
) -> int:
    """A process's life on watched threads: start ``workers``, wait, stop, join; the exit code.

    SIGTERM/SIGINT call ``on_signal`` (default: ``watched.stop``), which must make the
    wait return. ``wait`` blocks this thread until the process should end; by default
    until a stop or a worker's failure, or else e.g. an HTTP server's serving loop (one
    that takes the signals itself while it serves, and that the caller's
    ``Workers(on_failure=...)`` makes return when a worker dies). Then every worker is
    stopped and joined for up to ``join_timeout`` seconds in all, and ``closers`` run.
    The exit code is 0 after a requested stop and 1 when a worker died (logged as
    ``<name>.exiting``), so the supervisor starts the process again.
    """
    if install_signal_handlers:
        stop_on_signals(on_signal if on_signal is not None else watched.stop, name=name)
    try:
        for worker in workers:
            watched.start(worker)
        if wait is None:
            # In slices: a signal that lands just as this thread starts blocking on the lock
            # does not wake it, and its Python handler only runs when the wait returns.
            while not watched.wait(_SIGNAL_CHECK_INTERVAL):
                pass
        else:
            wait()
    finally:
        watched.stop()
        still = watched.join(timeout=join_timeout)
        if still:
            log.warning(f"{name}.workers_still_running", workers=still)
        for close in closers:
            close()
    if watched.failure is None:
        return 0
    log.error(f"{name}.exiting", reason=watched.failure, exit_code=1)
    return 1
