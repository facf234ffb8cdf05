"""ServiceRuntime runs every consumer on a watched thread: one that dies ends the process (1)."""

from __future__ import annotations

import threading
from typing import Any, cast

from saga_runtime import ServiceRuntime, Worker
from saga_runtime.faults import CrashPointError


class FakeRunner:
    """Stands in for ConsumerRunner: runs until stopped, or raises when told to."""

    def __init__(self, *, crash: threading.Event | None = None) -> None:
        self._stop = threading.Event()
        self._crash = crash
        self.started = threading.Event()
        self.stopped_cleanly = False

    def run(self) -> None:
        self.started.set()
        while not self._stop.wait(0.01):
            if self._crash is not None and self._crash.is_set():
                raise CrashPointError("crash point consumer.polled armed with raise:")
        self.stopped_cleanly = True

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def readiness(self, *, grace: float) -> str | None:
        return None


def runtime(*runners: FakeRunner) -> ServiceRuntime:
    fake: Any = object()
    return ServiceRuntime(
        service="stock",
        kafka=fake,
        pool=fake,
        outbox=fake,
        uow_factory=fake,
        runner=cast(Any, runners[0]),
        runners=cast(Any, list(runners)),
    )


def run_in_thread(service: ServiceRuntime, **kwargs: Any) -> tuple[threading.Thread, list[int]]:
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(service.run_consumer(install_signal_handlers=False, **kwargs))
    )
    thread.start()
    return thread, codes


def test_a_consumer_thread_that_raises_stops_the_others_and_the_exit_code_is_1() -> None:
    crash = threading.Event()
    healthy, doomed = FakeRunner(), FakeRunner(crash=crash)
    thread, codes = run_in_thread(runtime(healthy, doomed))
    assert healthy.started.wait(5) and doomed.started.wait(5)

    crash.set()

    thread.join(10)
    assert not thread.is_alive() and codes == [1]
    assert healthy.stopped_cleanly  # asked to stop, it finished its work and returned


def test_an_extra_worker_that_dies_ends_the_service_too() -> None:
    runner = FakeRunner()
    sweeper = Worker(name="orders-deadline", run=lambda: None)  # returns unasked
    thread, codes = run_in_thread(runtime(runner), workers=[sweeper])
    thread.join(10)
    assert codes == [1]
    assert runner.stopped_cleanly


def test_stopping_the_service_is_exit_code_0() -> None:
    runners = [FakeRunner(), FakeRunner(), FakeRunner()]
    service = runtime(*runners)
    thread, codes = run_in_thread(service)
    assert all(r.started.wait(5) for r in runners)

    service.stop_consumers()

    thread.join(10)
    assert codes == [0]
    assert all(r.stopped_cleanly for r in runners)


def test_a_runner_its_owner_stops_directly_stops_the_service_without_failure() -> None:
    """Tests and embedders stop ``runtime.runner`` itself; that is no crash."""
    first, second = FakeRunner(), FakeRunner()
    thread, codes = run_in_thread(runtime(first, second))
    assert first.started.wait(5)
    first.stop()
    thread.join(10)
    assert codes == [0]
    assert second.stopped_cleanly
