"""Worker threads: an unexpected end (a raise, or a return nobody asked for) is fatal."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from saga_runtime import Worker, Workers, run_workers
from saga_runtime.faults import CrashPointError


class Loop:
    """A worker that runs until stopped, like a consumer runner or a sweeper."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.started = threading.Event()

    def run(self) -> None:
        self.started.set()
        self.stop_event.wait()

    def worker(self, name: str) -> Worker:
        return Worker(name=name, run=self.run, stop=self.stop_event.set)


def test_stopping_is_no_failure_and_every_worker_returns() -> None:
    failures: list[str] = []
    workers = Workers(on_failure=failures.append)
    loops = [Loop(), Loop()]
    for n, loop in enumerate(loops):
        workers.start(loop.worker(f"loop-{n}"))
    assert all(loop.started.wait(5) for loop in loops)
    assert workers.problem() is None
    assert not workers.wait(0.05)

    workers.stop()

    assert workers.wait(0)
    assert workers.join(timeout=5) == []
    assert workers.failure is None and failures == []
    assert workers.problem() is None


def test_a_worker_that_raises_is_logged_with_its_traceback_and_reported_once() -> None:
    failures: list[str] = []
    workers = Workers(on_failure=failures.append)
    healthy = Loop()
    workers.start(healthy.worker("healthy"))
    release = threading.Event()

    def boom() -> None:
        release.wait()
        raise CrashPointError("bug in a handler loop")

    workers.start(Worker(name="consumer-1", run=boom))
    with capture_logs() as logs:
        release.set()
        assert workers.wait(5)
        workers.join(timeout=0.5)

    assert failures == ["consumer-1"]
    assert workers.failure is not None and "consumer-1 raised CrashPointError" in workers.failure
    assert workers.problem() == workers.failure
    died = [entry for entry in logs if entry["event"] == "worker.died"]
    assert len(died) == 1
    assert died[0]["worker"] == "consumer-1" and died[0]["log_level"] == "error"
    assert isinstance(died[0]["exc_info"], CrashPointError)
    # The others are still running until the process stops them.
    assert healthy.started.is_set() and not healthy.stop_event.is_set()
    workers.stop()
    assert workers.join(timeout=5) == []
    assert workers.failure is not None  # stopping afterwards does not clear it


def test_a_worker_that_returns_while_the_process_runs_is_a_failure() -> None:
    failures: list[str] = []
    workers = Workers(on_failure=failures.append)
    workers.start(Worker(name="sweeper", run=lambda: None))
    assert workers.wait(5)
    assert failures == ["sweeper"]
    assert workers.failure == "sweeper returned while the process was running"


def test_a_dead_thread_shows_in_liveness_even_before_it_is_reported() -> None:
    workers = Workers()
    gate = threading.Event()
    workers.start(Worker(name="quick", run=gate.wait))
    assert workers.problem() is None
    gate.set()
    assert workers.wait(5)
    assert workers.problem() is not None


def test_worker_names_are_unique() -> None:
    workers = Workers()
    loop = Loop()
    workers.start(loop.worker("same"))
    with pytest.raises(ValueError, match="already runs"):
        workers.start(Loop().worker("same"))
    workers.stop()
    workers.join(timeout=5)


def test_a_failing_stop_hook_does_not_keep_the_others_running() -> None:
    workers = Workers()
    loop = Loop()

    def bad_stop() -> None:
        raise RuntimeError("cannot stop")

    workers.start(Worker(name="bad", run=lambda: loop.stop_event.wait(), stop=bad_stop))
    workers.start(loop.worker("good"))
    workers.stop()
    assert workers.join(timeout=5) == []


# --- run_workers: one process's life, shared by the services and the relay ----------------------


@pytest.fixture
def restored_signal_handlers() -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_sigterm_stops_every_worker_and_the_exit_code_is_0(restored_signal_handlers: None) -> None:
    loops = [Loop(), Loop()]
    closed: list[str] = []

    def terminate_once_running() -> None:
        assert all(loop.started.wait(5) for loop in loops)
        # To the main thread itself: a process-wide kill sent from this thread may be taken
        # by this thread, and then the main thread's lock wait is not interrupted.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    threading.Thread(target=terminate_once_running, daemon=True).start()
    with capture_logs() as logs:
        code = run_workers(
            Workers(),
            [loop.worker(f"loop-{n}") for n, loop in enumerate(loops)],
            name="relay",
            closers=[lambda: closed.append("health")],
        )

    assert code == 0
    assert all(loop.stop_event.is_set() for loop in loops)
    assert closed == ["health"]
    assert [e["signal"] for e in logs if e["event"] == "relay.stopping"] == ["SIGTERM"]


def test_a_dead_worker_stops_the_others_and_the_exit_code_is_1() -> None:
    healthy = Loop()
    closed: list[str] = []
    with capture_logs() as logs:
        code = run_workers(
            Workers(),
            [healthy.worker("healthy"), Worker(name="sweeper", run=lambda: None)],
            name="service",
            install_signal_handlers=False,
            closers=[lambda: closed.append("health")],
        )

    assert code == 1
    assert healthy.stop_event.is_set() and closed == ["health"]
    [exiting] = [e for e in logs if e["event"] == "service.exiting"]
    assert exiting["reason"] == "sweeper returned while the process was running"


def test_a_custom_wait_returns_on_signal_or_on_a_dead_worker(
    restored_signal_handlers: None,
) -> None:
    """As with uvicorn: its serving loop is the wait; a signal or a worker's death ends it."""
    serving = threading.Event()
    signalled: list[str] = []

    def on_signal() -> None:
        signalled.append("stop")
        serving.set()

    def serve() -> None:
        signal.raise_signal(signal.SIGINT)  # on the main thread, which serves
        serving.wait(5)

    consumer = Loop()
    code = run_workers(
        Workers(), [consumer.worker("consumer-0")], name="service", on_signal=on_signal, wait=serve
    )
    assert code == 0 and signalled == ["stop"] and consumer.stop_event.is_set()

    serving.clear()
    code = run_workers(
        Workers(on_failure=lambda _name: serving.set()),
        [Worker(name="consumer-0", run=lambda: None)],
        name="service",
        install_signal_handlers=False,
        wait=lambda: serving.wait(5),
    )
    assert code == 1 and serving.is_set()
