"""The effect executor on the real PostgreSQL: requested in a transaction, run once, recorded
once, retried until a deadline, taken over after a crash, never recorded twice."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from typing import Any

import pytest
from psycopg import sql

from saga_runtime import (
    Effect,
    EffectExecutor,
    EffectOutcome,
    Effects,
    EffectUsageError,
    Event,
    RetryableError,
    RetryPolicy,
    UnitOfWork,
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


def test_an_effect_exists_only_if_its_transaction_commits_and_runs_once(effects_stack: Stack):
    world = OutsideWorld()
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    with pytest.raises(RuntimeError, match="rolled back"), factory.begin() as uow:
        uow.request_effect("ping", aggregate_id="a-1", key="k-rolled-back", request={})
        raise RuntimeError("rolled back")
    first = request(factory, "ping", aggregate_id="a-1", key="k-1", n=1)
    again = request(factory, "ping", aggregate_id="a-1", key="k-1", n=1)  # a redelivery
    assert first == again
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
    assert world.keys_called() == ["k-1"]
    assert world.keys_heard() == ["k-1"]
    [row] = effects_stack.rows()
    assert row["outcome"] == {"ok": True, "result": {"key": "k-1"}, "error": None}
    assert (row["attempts"], row["lease_owner"], row["request"]) == (1, None, {"n": 1})


def test_a_unit_of_works_effects_are_recorded_together_in_request_order(effects_stack: Stack):
    world = OutsideWorld()
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(), world.kind("pong")])
    factory = effects_stack.factory(effects)
    earlier = request(factory, "ping", aggregate_id="a-1", key="k-earlier")
    with factory.begin() as uow:
        for aggregate, key in [
            ("a-2", "k-2"),
            ("a-1", "k-1"),
            ("a-1", "k-earlier"),
            ("a-2", "k-3"),
        ]:
            uow.request_effect("ping", aggregate_id=aggregate, key=key, request={"key": key})
        table = sql.Identifier(effects_stack.schema, "effects")
        count = sql.SQL("SELECT count(*) FROM {}").format(table)
        assert uow.conn.execute(count).fetchone() == (1,)  # written together, at flush
    first, second, again, third = uow.requested
    assert again == earlier and first < second < third
    rows = effects_stack.rows()
    assert [r["idempotency_key"] for r in rows] == ["k-earlier", "k-2", "k-1", "k-3"]
    assert [r["id"] for r in rows[1:]] == [first, second, third]
    refused = pytest.raises(EffectUsageError, match="already names a ping effect of aggregate a-1")
    with refused, factory.begin() as uow:
        uow.request_effect("pong", aggregate_id="a-9", key="k-new", request={})
        uow.request_effect("pong", aggregate_id="a-9", key="k-1", request={})
    assert len(effects_stack.rows()) == 4  # the failed unit of work recorded nothing


def test_an_outcome_goes_through_the_decision_which_emits_and_requests_more(
    effects_stack: Stack,
):
    world = OutsideWorld()

    def decide(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        world.on_outcome(uow, effect, outcome)
        uow.emit(Pinged(key=effect.key), aggregate_id=effect.aggregate_id)
        if effect.key == "first":
            uow.request_effect("ping", aggregate_id=effect.aggregate_id, key="second", request={})

    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(on_outcome=decide)])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="first")
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["done", "done"], timeout=10)
    assert world.keys_called() == ["first", "second"]
    assert effects_stack.outbox_types() == ["Pinged", "Pinged"]


def test_two_executors_racing_run_each_effect_once(effects_stack: Stack):
    world = OutsideWorld()
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    keys = [f"k-{n}" for n in range(60)]
    for n, key in enumerate(keys):
        request(factory, "ping", aggregate_id=f"a-{n % 20}", key=key)
    executors = [
        EffectExecutor(effects=effects, uow_factory=factory, settings=fast(claim_batch=3))
        for _ in range(2)
    ]
    with running(*executors):
        wait_until(lambda: effects_stack.statuses() == ["done"] * 60, timeout=20)
    assert sorted(world.keys_called()) == sorted(keys)
    assert sorted(world.keys_heard()) == sorted(keys)
    assert {row["attempts"] for row in effects_stack.rows()} == {1}


def test_after_a_crash_between_call_and_record_the_call_is_made_again_with_its_key(
    effects_stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    world = OutsideWorld()
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    monkeypatch.setattr(faults, "_POINTS", {"raise:effects.after_call": 1.0})
    dying = EffectExecutor(effects=effects, uow_factory=factory, settings=fast(lease=1.0))
    with running(dying) as workers:
        wait_until(lambda: workers.failure, timeout=10, what="the executor to die")
    assert "CrashPointError" in (workers.failure or "")
    assert effects_stack.statuses() == ["running"]  # called, not recorded
    monkeypatch.setattr(faults, "_POINTS", {})
    heir = EffectExecutor(effects=effects, uow_factory=factory, settings=fast())
    with running(heir):
        wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
    assert world.keys_called() == ["k-1", "k-1"]
    assert world.keys_heard() == ["k-1"]
    assert effects_stack.rows()[0]["attempts"] == 2


def test_a_crash_point_inside_a_call_kills_the_executor_instead_of_failing_the_effect(
    effects_stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    """A service's own crash point between the far side's work and the call's return
    (``payments.after_charge``) stands for a crash there, as ``effects.after_call`` does."""

    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        faults.crash_point("toy.after_work")
        return {"key": key}

    world = OutsideWorld(answer=answer)
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    monkeypatch.setattr(faults, "_POINTS", {"raise:toy.after_work": 1.0})
    dying = EffectExecutor(effects=effects, uow_factory=factory, settings=fast(lease=1.0))
    with running(dying) as workers:
        wait_until(lambda: workers.failure, timeout=10, what="the executor to die")
    assert "CrashPointError" in (workers.failure or "")
    assert effects_stack.statuses() == ["running"], "neither failed nor recorded"
    monkeypatch.setattr(faults, "_POINTS", {})
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
    assert world.keys_called() == ["k-1", "k-1"]
    assert [outcome.ok for outcome in (o for _, o in world.outcomes)] == [True]


def test_a_late_duplicate_outcome_records_nothing(effects_stack: Stack):
    release = threading.Event()
    answers = iter(["late", "taken over"])

    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        mine = next(answers)
        if mine == "late":
            release.wait(10)
        return {"by": mine}

    world = OutsideWorld(answer=answer)
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    # One thread: busy with its late call, the slow executor claims nothing more.
    slow = EffectExecutor(
        effects=effects, uow_factory=factory, settings=fast(lease=0.5, concurrency=1)
    )
    # Its heartbeats never reach the database (a paused process, a partition), so its
    # lease expires during the call and the heir takes the effect over.
    slow.heartbeat = lambda: None  # type: ignore[method-assign]
    heir = EffectExecutor(effects=effects, uow_factory=factory, settings=fast())
    with running(slow):
        wait_until(lambda: effects_stack.statuses() == ["running"], timeout=10)
        with running(heir):
            wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
        release.set()
        wait_until(lambda: len(world.keys_called()) == 2, timeout=10)
        wait_until(lambda: slow._in_flight == 0, timeout=10, what="the late outcome's settling")
    [row] = effects_stack.rows()
    assert row["outcome"]["result"] == {"by": "taken over"}
    assert [outcome.result for _, outcome in world.outcomes] == [{"by": "taken over"}]


def test_transient_failures_are_retried_with_backoff_until_they_pass(effects_stack: Stack):
    failures = iter(range(3))

    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        if next(failures, None) is not None:
            raise RetryableError("far side unavailable")
        return {"ok": True}

    world = OutsideWorld(answer=answer)
    policy = RetryPolicy(initial_interval=_seconds(0.05), maximum_interval=_seconds(0.2))
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(retry=policy)])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["done"], timeout=10)
    assert world.keys_called() == ["k-1"] * 4
    calls = world.calls
    gaps = [later[1] - earlier[2] for earlier, later in itertools.pairwise(calls)]
    assert all(gap >= 0.03 for gap in gaps), gaps  # 0.05 s x jitter (0.8-1.0), then more
    [row] = effects_stack.rows()
    assert row["attempts"] == 4
    assert row["outcome"]["ok"] is True
    assert [outcome.ok for _, outcome in world.outcomes] == [True]


def test_an_outage_longer_than_the_deadline_is_a_terminal_failure_heard_by_the_decision(
    effects_stack: Stack,
):
    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        raise RetryableError("far side unavailable")

    world = OutsideWorld(answer=answer)
    kind = world.kind(
        deadline=_seconds(1.0),
        retry=RetryPolicy(initial_interval=_seconds(0.1), maximum_interval=_seconds(0.2)),
    )
    effects = Effects(schema=effects_stack.schema, kinds=[kind])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["failed"], timeout=10)
    [row] = effects_stack.rows()
    assert row["attempts"] >= 3
    assert "gave up after" in row["last_error"]
    [(key, outcome)] = world.outcomes
    assert (key, outcome.ok) == ("k-1", False)
    assert "far side unavailable" in (outcome.error or "")


def test_a_refusal_is_terminal_at_once(effects_stack: Stack):
    def answer(request: dict[str, Any], key: str) -> dict[str, Any]:
        raise ValueError("card declined")

    world = OutsideWorld(answer=answer)
    effects = Effects(schema=effects_stack.schema, kinds=[world.kind()])
    factory = effects_stack.factory(effects)
    request(factory, "ping", aggregate_id="a-1", key="k-1")
    with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
        wait_until(lambda: effects_stack.statuses() == ["failed"], timeout=10)
    assert effects_stack.rows()[0]["attempts"] == 1
    assert [outcome.error for _, outcome in world.outcomes] == ["ValueError('card declined')"]


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
