"""BatchedSettlement: outcomes waiting together are settled together, or each alone."""

from __future__ import annotations

import threading
from typing import Any

from saga_runtime import Effect, EffectOutcome
from saga_runtime.effect_batch import BatchedSettlement
from saga_runtime.effect_settlement import DecisionFailedInBatch, Retry


class FakeSettlement:
    """Holds the first settlement until ``release``, so the next outcomes queue up."""

    def __init__(self, *, together_fails: bool = False) -> None:
        self.release = threading.Event()
        self.alone: list[int] = []
        self.decision_errors: dict[int, str | None] = {}
        self.together: list[list[int]] = []
        self._first = True
        self._together_fails = together_fails

    def settle(
        self, effect: Effect, kind: Any, result: Any, *, decision_error: str | None = None
    ) -> None:
        self._hold()
        self.alone.append(effect.id)
        self.decision_errors[effect.id] = decision_error

    def settle_together(self, items: list[tuple[Effect, Any, EffectOutcome]]) -> None:
        self._hold()
        if self._together_fails:
            raise DecisionFailedInBatch(2, "on_outcome raised KeyError('a bug')")
        self.together.append([effect.id for effect, _, _ in items])

    def _hold(self) -> None:
        if self._first:
            self._first = False
            assert self.release.wait(10)


def effect(n: int) -> Effect:
    return Effect(id=n, aggregate_id=f"a-{n}", kind="ping", key=f"k-{n}", request={}, attempts=1)


def settle_concurrently(batched: BatchedSettlement, fake: FakeSettlement, n: int) -> None:
    threads = [
        threading.Thread(target=batched.settle, args=(effect(i), None, EffectOutcome(ok=True)))
        for i in range(n)
    ]
    threads[0].start()
    while fake._first:  # until the first outcome is being settled (held)
        threading.Event().wait(0.01)
    for thread in threads[1:]:
        thread.start()
    while len(batched._waiting) < n - 1:  # the others queue up behind it
        threading.Event().wait(0.01)
    fake.release.set()
    for thread in threads:
        thread.join(10)


def test_outcomes_waiting_together_are_settled_in_one_call() -> None:
    fake = FakeSettlement()
    batched = BatchedSettlement(fake, max_batch=50)  # type: ignore[arg-type]
    settle_concurrently(batched, fake, 6)
    assert fake.alone == [0], "the first found nothing else waiting"
    assert [sorted(ids) for ids in fake.together] == [[1, 2, 3, 4, 5]]


def test_when_the_batch_fails_each_outcome_is_settled_alone() -> None:
    fake = FakeSettlement(together_fails=True)
    batched = BatchedSettlement(fake, max_batch=50)  # type: ignore[arg-type]
    settle_concurrently(batched, fake, 4)
    assert sorted(fake.alone) == [0, 1, 2, 3]


def test_a_decision_that_failed_in_the_batch_counts_as_tried_once_when_settled_alone() -> None:
    fake = FakeSettlement(together_fails=True)
    batched = BatchedSettlement(fake, max_batch=50)  # type: ignore[arg-type]
    settle_concurrently(batched, fake, 4)
    assert fake.decision_errors == {
        0: None,
        1: None,
        2: "on_outcome raised KeyError('a bug')",
        3: None,
    }


def test_a_retry_is_scheduled_alone_at_once() -> None:
    fake = FakeSettlement()
    fake._first = False
    batched = BatchedSettlement(fake, max_batch=50)  # type: ignore[arg-type]
    batched.settle(effect(7), None, Retry("timeout"))  # type: ignore[arg-type]
    assert fake.alone == [7] and fake.together == []
