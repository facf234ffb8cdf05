"""How an effect is settled after its call, on the real PostgreSQL: a slow call keeps its
lease, an outcome is recorded before it is decided (a failing decision never calls again),
a database error while recording is retried, and the decision continues the saga."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql

from saga_runtime import (
    Effect,
    EffectExecutor,
    EffectOutcome,
    Effects,
    Envelope,
    Event,
    UnitOfWork,
    UnitOfWorkFactory,
    faults,
)
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


class Pinged(Event):
    event_type = "Pinged"
    key: str


def test_a_call_slower_than_its_lease_keeps_it_by_heartbeat(effects_stack: Stack):
    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        time.sleep(2.0)
        return {}

    world = OutsideWorld(answer=answer)
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    slow = EffectExecutor(effects=effects, uow_factory=factory, settings=fast(lease=0.6))
    heir = EffectExecutor(effects=effects, uow_factory=factory, settings=fast(lease=0.6))
    with running(slow):
        wait_until(lambda: effects_stack.statuses() == ["running"], timeout=10)
        with running(heir):  # would take the effect over once its first lease expired
            wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
    assert world.keys_called() == ["k-1"]
    assert effects_stack.rows()[0]["attempts"] == 1


def test_a_decision_that_fails_once_is_made_again_without_calling_again(effects_stack: Stack):
    world = OutsideWorld()
    failures = iter([RuntimeError("a passing bug")])

    def decide(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        world.on_outcome(uow, effect, outcome)
        uow.emit(Pinged(key=effect.key), aggregate_id=effect.aggregate_id)
        failure = next(failures, None)
        if failure is not None:
            raise failure

    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(on_outcome=decide)])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
    assert world.keys_called() == ["k-1"]
    assert world.keys_heard() == ["k-1", "k-1"]
    assert effects_stack.outbox_types() == ["Pinged"]  # the failed decision rolled back
    [row] = effects_stack.rows()
    assert (row["attempts"], row["lease_owner"]) == (1, None)
    assert row["decided_at"] is not None


def test_a_decision_that_keeps_failing_leaves_the_effect_undecided_and_its_aggregate_waiting(
    effects_stack: Stack,
):
    world = OutsideWorld()

    def decide(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        world.on_outcome(uow, effect, outcome)
        if effect.key == "k-1":
            raise KeyError("a bug")

    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(on_outcome=decide)])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    request(factory, "ping", aggregate_id="a-1", key="k-2")
    request(factory, "ping", aggregate_id="b-1", key="k-3")
    executor = EffectExecutor(
        effects=effects, uow_factory=factory, settings=fast(decision_attempts=2)
    )
    with running(executor):
        wait_until(lambda: effects_stack.statuses() == ["undecided", "pending", "done"], timeout=10)
        time.sleep(0.5)  # a few more polls: nothing else happens to a-1
    assert sorted(world.keys_called()) == ["k-1", "k-3"]
    assert world.keys_heard().count("k-1") == 2
    first = effects_stack.rows()[0]
    assert first["outcome"]["ok"] is True  # the call's result is kept for the operator
    assert "on_outcome raised KeyError('a bug')" in first["last_error"]
    assert (first["attempts"], first["lease_owner"]) == (1, None)


def test_after_a_crash_between_record_and_decision_only_the_decision_is_made_again(
    effects_stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    """A decision that fails has its outcome recorded alone; a crash then loses nothing."""
    world = OutsideWorld()
    failures = iter([RuntimeError("a passing bug")])

    def decide(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        world.on_outcome(uow, effect, outcome)
        failure = next(failures, None)
        if failure is not None:
            raise failure

    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(on_outcome=decide)])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    monkeypatch.setattr(faults, "_POINTS", {"raise:effects.after_record": 1.0})
    dying = EffectExecutor(effects=effects, uow_factory=factory, settings=fast(lease=1.0))
    with running(dying) as workers:
        wait_until(lambda: workers.failure, timeout=10, what="the executor to die")
    assert effects_stack.statuses() == ["recorded"]
    monkeypatch.setattr(faults, "_POINTS", {})
    heir = EffectExecutor(effects=effects, uow_factory=factory, settings=fast())
    with running(heir):
        wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
    assert world.keys_called() == ["k-1"], "the call is not made again"
    assert world.keys_heard() == ["k-1", "k-1"]


def test_an_outcome_whose_decision_succeeds_is_recorded_and_decided_in_one_transaction(
    effects_stack: Stack,
):
    world = OutsideWorld()
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    counting = CountingFactory(**effects_stack.factory(effects).__dict__)
    request(counting, "ping", aggregate_id="a-1", key="k-1")
    counting.opened.clear()
    with running(EffectExecutor(effects=effects, uow_factory=counting, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
    assert counting.opened == ["a-1"], "one unit of work settles the effect"
    [row] = effects_stack.rows()
    assert row["outcome"]["ok"] is True and row["decided_at"] is not None


@dataclass(frozen=True)
class CountingFactory(UnitOfWorkFactory):
    """Notes, for each unit of work it opens, the aggregate it locked (None: none)."""

    opened: list[str | None] = field(default_factory=list)

    @contextmanager
    def begin(self, **options: Any) -> Iterator[UnitOfWork]:
        with super().begin(**options) as uow:
            yield uow
            self.opened.append(sorted(uow.locked)[0] if uow.locked else None)


@dataclass(frozen=True)
class FlakyFactory(UnitOfWorkFactory):
    """Its first ``failures`` transactions fail as a dropped connection would."""

    failures: list[int] = field(default_factory=lambda: [1])

    @contextmanager
    def begin(self, **options: Any) -> Iterator[UnitOfWork]:
        if self.failures[0] > 0:
            self.failures[0] -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        with super().begin(**options) as uow:
            yield uow


def test_a_database_error_while_recording_is_retried_without_calling_again(
    effects_stack: Stack,
):
    world = OutsideWorld()
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    flaky = FlakyFactory(
        pool=factory.pool, outbox=factory.outbox, producer=factory.producer, effects=effects
    )
    # The lease is short: without retries it would expire and the call be made again.
    executor = EffectExecutor(effects=effects, uow_factory=flaky, settings=fast(lease=1.0))
    with running(executor):
        wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
        time.sleep(1.5)  # past the lease: nothing more is called
    assert flaky.failures == [0]
    assert world.keys_called() == ["k-1"]
    assert effects_stack.rows()[0]["attempts"] == 1


def test_the_decision_about_an_outcome_continues_the_requesting_saga(effects_stack: Stack):
    def decide(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        uow.emit(Pinged(key=effect.key), aggregate_id=effect.aggregate_id)

    world = OutsideWorld()
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(on_outcome=decide)])
    factory = effects_stack.factory(effects)
    cause = Envelope.new(Pinged(key="start"), aggregate_id="a-1", producer="elsewhere")
    with factory.begin(cause=cause) as uow:
        uow.request_effect("ping", aggregate_id="a-1", key="k-1", request={})
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.outbox_types() == ["Pinged"], timeout=10)
    query = sql.SQL("SELECT correlation_id FROM {}").format(
        sql.Identifier(effects_stack.schema, "outbox")
    )
    [(correlation_id,)] = effects_stack.admin.execute(query).fetchall()
    assert correlation_id == cause.correlation_id
    assert effects_stack.rows()[0]["correlation_id"] == cause.correlation_id


def test_a_restarted_instance_takes_over_its_previous_lifes_leases_at_once(
    effects_stack: Stack,
):
    """After a crash, the new life runs the effects its predecessor held without waiting
    for their leases to expire; another instance's leases are left alone."""
    world = OutsideWorld()
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    request(factory, "ping", aggregate_id="b-1", key="k-2")
    long = fast(lease=120.0)
    crashed = EffectExecutor(effects=effects, uow_factory=factory, settings=long, instance="p-0")
    neighbour = EffectExecutor(effects=effects, uow_factory=factory, settings=long, instance="p-1")
    [(mine, _)] = crashed.claim(1)  # then the process dies: the call is never made
    [(theirs, _)] = neighbour.claim(1)
    assert effects_stack.statuses() == ["running", "running"]
    reborn = EffectExecutor(effects=effects, uow_factory=factory, settings=long, instance="p-0")
    with running(reborn):
        wait_until(lambda: "done" in effects_stack.statuses(), timeout=10, what="the take-over")
        time.sleep(0.5)
    assert world.keys_called() == [mine.key], "the neighbour's effect is still its own"
    assert neighbour.owner in {row["lease_owner"] for row in effects_stack.rows()}
    assert theirs.key != mine.key


def test_a_restarted_instance_runs_what_it_took_over_in_growing_waves(effects_stack: Stack):
    """One call, then two, then four, each wave after the last is settled: a call that
    killed the previous life kills the next one alone, not with everything in flight."""

    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        time.sleep(0.2)
        return {}

    world = OutsideWorld(answer=answer)
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    for n in range(7):
        request(factory, "ping", aggregate_id=f"a-{n}", key=f"k-{n}")
    crashed = EffectExecutor(effects=effects, uow_factory=factory, settings=fast(), instance="p")
    assert len(crashed.claim(7)) == 7  # then the process dies with seven calls in flight
    reborn = EffectExecutor(effects=effects, uow_factory=factory, settings=fast(), instance="p")
    with running(reborn):
        wait_until(lambda: effects_stack.statuses() == ["done"] * 7, timeout=20)
    spans = sorted((start, end) for _, start, end in world.calls)
    waves = [spans[:1], spans[1:3], spans[3:7]]
    for earlier, later in itertools.pairwise(waves):
        assert min(start for start, _ in later) >= max(end for _, end in earlier)
    fours = waves[2]
    assert max(start for start, _ in fours) < min(end for _, end in fours), "a wave runs at once"


class RecordingClaims(EffectExecutor):
    """Records each claim: how many it asked for, were in flight, and it got."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.claims: list[tuple[int, int, int]] = []

    def claim(self, limit: int) -> list[Any]:
        in_flight = self._in_flight
        claimed = super().claim(limit)
        self.claims.append((limit, in_flight, len(claimed)))
        return claimed


def test_with_a_backlog_claims_wait_for_an_eighth_of_the_threads(effects_stack: Stack):
    """Claiming each thread as it frees up would read every aggregate's head once per
    effect under load; with more due than threads, a claim takes four at least here."""

    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        time.sleep(0.01)
        return {}

    world = OutsideWorld(answer=answer)
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    with factory.begin() as uow:
        for n in range(200):
            uow.request_effect("ping", aggregate_id=f"a-{n}", key=f"k-{n}", request={})
    executor = RecordingClaims(
        effects=effects, uow_factory=factory, settings=fast(concurrency=32, claim_batch=100)
    )
    with running(executor):
        wait_until(lambda: effects_stack.statuses() == ["done"] * 200, timeout=60)
    assert len(world.keys_called()) == 200
    # Until the backlog runs out (a claim gets less than it asked for).
    backlog = list(itertools.takewhile(lambda c: c[2] == c[0], executor.claims))
    busy = [limit for limit, in_flight, _ in backlog if in_flight]
    assert len(busy) >= 5, executor.claims
    assert min(busy) >= 4, executor.claims
