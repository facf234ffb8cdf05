"""An unmeasured load before the measured one, so that a broker that just started is warm.

Kafka's JVM compiles its hot paths during its first minute of traffic: measured
on a broker started seconds before, the same saga run showed the broker at 51%
of a core instead of 39%, and every hop slower. So when a benchmark starts the
stack itself, it first drives orders for a while and measures nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from saga_harness.bench.load import Authorize, open_loop
from saga_harness.bench.saga import order_body

__all__ = ["WARMUP_RATE", "default_warmup_seconds", "warm_up"]

WARMUP_RATE = 20.0  # orders/s: below every ceiling measured, so the system is not left behind
COLD_STACK_WARMUP_S = 45.0
SETTLE_S = 3.0  # the warm-up's last sagas finish before the measured load starts


def default_warmup_seconds(stack_was_running: bool) -> float:
    """45 s when the benchmark starts the stack itself, none when the stack was already up."""
    return 0.0 if stack_was_running else COLD_STACK_WARMUP_S


def warm_up(
    orders_url: str,
    *,
    seconds: float,
    rate: float,
    progress: Callable[[str], None],
    authorize: Authorize,
) -> dict[str, Any]:
    """Drive ``rate`` orders/s for ``seconds`` and measure nothing; what was done, for the JSON."""
    if seconds <= 0:
        return {"seconds": 0}
    progress(
        f"bench: warming up: {rate:g} orders/s for {seconds:g}s, not measured"
        " (a broker that just started compiles its hot paths first)"
    )
    load = asyncio.run(
        open_loop(
            f"{orders_url.rstrip('/')}/orders",
            order_body,
            rate=rate,
            duration=seconds,
            seed=0,
            authorize=authorize,
        )
    )
    time.sleep(SETTLE_S)
    return {"seconds": seconds, "rate": rate, "orders": len(load.submitted)}
