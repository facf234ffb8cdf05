"""The chaos driver offers its rate whatever the API's latency (open loop)."""

from __future__ import annotations

import random
import threading
from typing import Any

from saga_harness.chaos.driver import OrderDriver


def test_a_slow_api_does_not_hold_back_the_next_placements() -> None:
    """Five placements are in flight at once while the first still waits for its answer
    (placed one at a time, a rate of 100 became 31 a second against a loaded API)."""
    in_flight, most = 0, 0
    lock, five = threading.Lock(), threading.Event()
    driver = OrderDriver(system=None, rng=random.Random(1), rate=1000.0)  # type: ignore[arg-type]

    def slow_place(client: Any, kind: str, cancel_after: float) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
            if in_flight >= 5:
                five.set()
        five.wait(10)  # the API answers once five are waiting on it
        with lock:
            in_flight -= 1

    driver._place = slow_place  # type: ignore[method-assign]
    driving = threading.Thread(target=driver.run)
    driving.start()
    try:
        assert five.wait(10), f"at most {most} placement(s) in flight at once"
    finally:
        driver.stop()
        driving.join(timeout=15)

    assert not driving.is_alive()
    assert driver.offered >= 5 and driver.seconds > 0
