"""The effect executor's concurrency: by aggregate, with each aggregate's effects in order."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from saga_runtime import EffectExecutor, Effects
from tests.integration.effects_stack import (
    OutsideWorld,
    Stack,
    effects_stack,
    fast,
    request,
    running,
)
from tests.support import wait_until

__all__ = ["effects_stack"]  # the fixture, imported for pytest

pytestmark = pytest.mark.integration


def sleeping(seconds: float) -> Any:
    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        time.sleep(seconds)
        return {}

    return answer


def test_one_aggregates_effects_run_in_order_others_concurrently(effects_stack: Stack):
    world = OutsideWorld(answer=sleeping(0.3))
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    for n in range(3):
        for aggregate in ("a", "b"):
            request(factory, "ping", aggregate_id=aggregate, key=f"{aggregate}-{n}")
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["done"] * 6, timeout=20)
    calls = {key: (start, end) for key, start, end in world.calls}
    for aggregate in ("a", "b"):
        spans = [calls[f"{aggregate}-{n}"] for n in range(3)]
        # In request order, one after the other: each starts after the previous ended.
        assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    # ...while the two aggregates' effects overlap.
    for n in range(3):
        a, b = calls[f"a-{n}"], calls[f"b-{n}"]
        assert a[0] < b[1] and b[0] < a[1], (a, b)


def test_two_hundred_slow_calls_run_concurrently(effects_stack: Stack):
    world = OutsideWorld(answer=sleeping(2.0))
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    with factory.begin() as uow:
        for n in range(200):
            uow.request_effect("ping", aggregate_id=f"a-{n}", key=f"k-{n}", request={})
    executor = EffectExecutor(
        effects=effects, uow_factory=factory, settings=fast(concurrency=200, lease=30.0)
    )
    started = time.monotonic()
    with running(executor):
        wait_until(lambda: effects_stack.statuses() == ["done"] * 200, timeout=60, interval=0.2)
        elapsed = time.monotonic() - started
    print(f"200 effects of 2 s each, 200 threads: {elapsed:.2f} s")
    assert elapsed < 60  # one at a time would take 400 s; the precise figure is a benchmark's
    assert sorted(world.keys_heard()) == sorted(f"k-{n}" for n in range(200))
