"""Effects declared in the system definition: bound like handlers, checked like reactions,
and given to the service's runtime (its units of work and an executor) by ``build_runtime``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from contracts.orders import OrderCancelled, OrderCreated
from contracts.payments import PaymentRefunded
from saga_runtime import (
    DefinitionError,
    Effect,
    EffectOutcome,
    RetryPolicy,
    Service,
    ServiceSettings,
    System,
    UnitOfWork,
    build_runtime,
    effect,
    reaction,
)


def refund(request: dict[str, Any], key: str, *, provider: Any) -> dict[str, Any]:
    return dict(provider(request, key))


def on_refunded(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome, *, ledger: Any) -> None:
    ledger.append((effect.key, outcome.ok))


def on_cancelled(uow: Any, envelope: Any) -> None:
    pass


def refunds(**effects: Any) -> Service:
    return Service(
        name="refunds",
        emits=(PaymentRefunded,),
        handles={OrderCancelled: reaction(on_cancelled)},
        effects=effects,
    )


def orders() -> Service:
    return Service(name="orders", emits=(OrderCreated, OrderCancelled))


def test_a_declared_effect_binds_its_call_and_decision_by_parameter_name() -> None:
    service = refunds(
        refund=effect(
            refund,
            on_refunded,
            emits=(PaymentRefunded,),
            deadline=timedelta(minutes=5),
            retry=RetryPolicy(maximum_attempts=4),
        )
    )
    ledger: list[Any] = []
    [kind] = service.effect_kinds(
        {"provider": lambda request, key: {"refund": key}, "ledger": ledger}
    )
    assert (kind.name, kind.deadline, kind.retry.maximum_attempts) == (
        "refund",
        timedelta(minutes=5),
        4,
    )
    assert kind.call({"amount": 1}, "k-1") == {"refund": "k-1"}
    claimed = Effect(id=1, aggregate_id="o-1", kind="refund", key="k-1", request={})
    kind.on_outcome(None, claimed, EffectOutcome(ok=True))  # type: ignore[arg-type]
    assert ledger == [("k-1", True)]


def test_a_dependency_an_effect_needs_and_nobody_provides_is_an_error_at_start_up() -> None:
    service = refunds(refund=effect(refund, on_refunded))
    with pytest.raises(DefinitionError, match=r"the call of effect refund .* needs provider"):
        service.effect_kinds({"ledger": []})
    with pytest.raises(DefinitionError, match=r"the decision about effect refund .* needs ledger"):
        service.effect_kinds({"provider": object()})


def test_a_deadline_and_a_retry_policy_may_be_named_and_come_from_the_dependencies() -> None:
    """So that the composition root sets them from the service's settings."""
    service = refunds(refund=effect(refund, on_refunded, deadline="undo_by", retry="undo_retry"))
    given = {
        "provider": object(),
        "ledger": [],
        "undo_by": timedelta(hours=24),
        "undo_retry": RetryPolicy(maximum_interval=timedelta(seconds=30)),
    }
    [kind] = service.effect_kinds(given)
    assert kind.deadline == timedelta(hours=24)
    assert kind.retry.maximum_interval == timedelta(seconds=30)

    with pytest.raises(DefinitionError, match=r"effect refund takes its timedelta from 'undo_by'"):
        service.effect_kinds({k: v for k, v in given.items() if k != "undo_by"})
    with pytest.raises(DefinitionError, match=r"'undo_retry' holds int, not RetryPolicy"):
        service.effect_kinds({**given, "undo_retry": 3})


def test_a_decision_may_emit_only_its_own_services_events() -> None:
    service = refunds(refund=effect(refund, on_refunded, emits=(OrderCreated,)))
    with pytest.raises(DefinitionError, match="decision about effect refund emits OrderCreated"):
        System(services=(orders(), service), terminal=(PaymentRefunded, OrderCreated))


def test_an_effect_kind_must_be_a_plain_name_declared_with_effect() -> None:
    terminal = (PaymentRefunded, OrderCreated)
    spaced = refunds(**{"re fund": effect(refund, on_refunded)})
    with pytest.raises(DefinitionError, match="effect kind 're fund' is not a plain name"):
        System(services=(orders(), spaced), terminal=terminal)
    bare = refunds(refund=refund)
    with pytest.raises(DefinitionError, match=r"effect 'refund' is not declared with effect\(\)"):
        System(services=(orders(), bare), terminal=terminal)


def test_a_service_without_effects_gets_no_effects_table_nor_executor() -> None:
    system = System(services=(orders(), refunds()), terminal=(PaymentRefunded, OrderCreated))
    runtime = build_runtime(system, "refunds", ServiceSettings())
    try:
        assert runtime.effects is None and runtime.executor is None
        assert runtime.uow_factory.effects is None
    finally:
        runtime.close()


def test_a_service_with_effects_gets_its_table_and_an_executor_from_its_settings() -> None:
    system = System(
        services=(orders(), refunds(refund=effect(refund, on_refunded))),
        terminal=(PaymentRefunded, OrderCreated),
    )
    settings = ServiceSettings.model_validate({"effects": {"concurrency": 3}})
    runtime = build_runtime(system, "refunds", settings, {"provider": object(), "ledger": []})
    try:
        assert runtime.effects is not None and list(runtime.effects.kinds) == ["refund"]
        assert runtime.uow_factory.effects is runtime.effects  # handlers may request_effect
        assert runtime.executor is not None
        assert runtime.executor.settings.concurrency == 3
        assert runtime.executor.uow_factory is runtime.uow_factory
    finally:
        runtime.close()


def test_the_executor_settings_come_from_the_effects_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EFFECTS_CONCURRENCY", "5")
    monkeypatch.setenv("EFFECTS_LEASE", "90")
    effects = ServiceSettings().effects
    assert (effects.concurrency, effects.lease, effects.decision_attempts) == (5, 90.0, 3)
