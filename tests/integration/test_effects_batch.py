"""Outcomes settled together on the real PostgreSQL: one transaction, each decision in its
own saga, nothing of it committed when one decision fails."""

from __future__ import annotations

import threading
from typing import Any
from uuid import uuid4

import pytest
from psycopg import sql

from saga_runtime import Effect, EffectExecutor, EffectOutcome, Effects, Event, UnitOfWork
from saga_runtime.effect_settlement import DecisionFailedInBatch, Settlement
from saga_runtime.effect_statements import ExecutorStatements
from tests.integration.effects_stack import OutsideWorld, Stack, effects_stack, fast
from tests.integration.test_effects_settlement import CountingFactory

__all__ = ["effects_stack"]  # the fixture, imported for pytest

pytestmark = pytest.mark.integration


class Pinged(Event):
    event_type = "Pinged"
    key: str


def settlement(factory: Any, schema: str, owner: str) -> Settlement:
    return Settlement(
        uow_factory=factory,
        statements=ExecutorStatements(schema),
        settings=fast(),
        owner=owner,
        stopping=threading.Event(),
    )


def claimed_effects(effects_stack: Stack, effects: Effects, n: int) -> tuple[Any, list[Effect]]:
    factory = CountingFactory(**effects_stack.factory(effects).__dict__)
    for i in range(n):
        with factory.begin(correlation_id=uuid4()) as uow:  # each in a saga of its own
            uow.request_effect("ping", aggregate_id=f"a-{i}", key=f"k-{i}", request={})
    executor = EffectExecutor(effects=effects, uow_factory=factory, settings=fast())
    claimed = [effect for effect, _ in executor.claim(n)]
    assert len(claimed) == n
    factory.opened.clear()
    return factory, claimed, executor.owner  # type: ignore[return-value]


def test_outcomes_settled_together_take_one_transaction_and_keep_their_sagas(
    effects_stack: Stack,
):
    world = OutsideWorld()

    def decide(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        world.on_outcome(uow, effect, outcome)
        uow.emit(Pinged(key=effect.key), aggregate_id=effect.aggregate_id)

    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(on_outcome=decide)])
    factory, claimed, owner = claimed_effects(effects_stack, effects, 5)  # type: ignore[misc]
    # The last one's lease was taken over meanwhile: it is not this executor's to settle.
    effects_stack.admin.execute(
        sql.SQL("UPDATE {} SET lease_owner = 'someone else' WHERE id = %s").format(
            sql.Identifier(effects_stack.schema, "effects")
        ),
        (claimed[-1].id,),
    )
    kind = effects.kind("ping")
    settlement(factory, effects_stack.schema, owner).settle_together(
        [(effect, kind, EffectOutcome(ok=True, result={"n": 1})) for effect in claimed]
    )
    assert len(factory.opened) == 1, "one unit of work for the batch"
    assert effects_stack.statuses() == ["done"] * 4 + ["running"]
    assert world.keys_heard() == ["k-0", "k-1", "k-2", "k-3"], "decided in order, once each"
    sagas = effects_stack.admin.execute(
        sql.SQL("SELECT envelope->'payload'->>'key', correlation_id FROM {} ORDER BY id").format(
            sql.Identifier(effects_stack.schema, "outbox")
        )
    ).fetchall()
    assert sagas == [(e.key, e.correlation_id) for e in claimed[:4]], "each in its own saga"


def test_a_failing_decision_leaves_nothing_of_the_batch_committed(effects_stack: Stack):
    world = OutsideWorld()

    def decide(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        world.on_outcome(uow, effect, outcome)
        uow.emit(Pinged(key=effect.key), aggregate_id=effect.aggregate_id)
        if effect.key == "k-2":
            raise KeyError("a bug")

    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(on_outcome=decide)])
    factory, claimed, owner = claimed_effects(effects_stack, effects, 4)  # type: ignore[misc]
    kind = effects.kind("ping")
    with pytest.raises(DecisionFailedInBatch) as failed:
        settlement(factory, effects_stack.schema, owner).settle_together(
            [(effect, kind, EffectOutcome(ok=True)) for effect in claimed]
        )
    assert failed.value.effect_id == claimed[2].id
    assert isinstance(failed.value.__cause__.__cause__, KeyError)
    assert effects_stack.statuses() == ["running"] * 4
    assert effects_stack.outbox_types() == []


def test_a_decision_that_failed_in_a_batch_is_made_again_as_many_times_as_allowed_in_all(
    effects_stack: Stack,
):
    world = OutsideWorld()

    def decide(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        world.on_outcome(uow, effect, outcome)
        raise KeyError("a bug")

    effects = Effects(schema=effects_stack.schema, kinds=[world.kind(on_outcome=decide)])
    factory, claimed, owner = claimed_effects(effects_stack, effects, 2)  # type: ignore[misc]
    kind = effects.kind("ping")
    settling = Settlement(
        uow_factory=factory,
        statements=ExecutorStatements(effects_stack.schema),
        settings=fast(decision_attempts=2),
        owner=owner,
        stopping=threading.Event(),
    )
    with pytest.raises(DecisionFailedInBatch) as failed:
        settling.settle_together([(effect, kind, EffectOutcome(ok=True)) for effect in claimed])
    assert world.keys_heard() == ["k-0"]
    settling.settle(claimed[0], kind, EffectOutcome(ok=True), decision_error=failed.value.error)
    assert world.keys_heard() == ["k-0", "k-0"], "two decisions in all, the batch's included"
    [first, _] = effects_stack.rows()
    assert first["status"] == "undecided"
    assert "on_outcome raised KeyError('a bug')" in first["last_error"]
