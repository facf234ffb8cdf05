"""The handler contract every service of the system passes, on the real database.

For every service of ``SYSTEM`` and every scenario of its part in ``tests.integration.contract``
(the events of one order), played through ``saga_runtime.testing.HandlerRunner`` exactly as
the consumer applies messages:

1. a redelivered event changes nothing and emits nothing: right after it was applied and
   again after the last event, through the inbox (a duplicate) and even without it (the
   handler alone: every reaction is idempotent by itself, not only thanks to the inbox);
2. every order in which the events could arrive settles alike (all of them are played:
   every permutation that respects what each event requires, see ``contract.scenario``);
3. every event a reaction emits is among those its declaration lists (the runner checks
   each delivery and raises ``UndeclaredEventError``), and so is every event a decision
   about an effect's outcome emits;
4. for a service with effects (calls to the outside world, made after the transaction),
   every arrival order settles alike whether the calls come back at once (each effect
   settled right after the delivery that requested it) or only after every event has
   arrived (a slow outside world); and a redelivery requests no effect again.

Each play runs in a transaction of its own that is rolled back, so plays cost a few
milliseconds and leave nothing behind.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from contracts.orders import OrderCreated
from contracts.stock import StockReserved, StockSold
from saga_runtime import DefinitionError, Envelope, Outcome, Service, reaction
from saga_runtime.testing import HandlerRunner, UndeclaredEventError
from saga_system import SYSTEM
from tests.fixtures.handlers import OpenRunner
from tests.integration.contract import CONTRACTS, Contract
from tests.integration.contract.scenario import ADDRESS, EMAIL, LINES, Saga, Scenario, State

pytestmark = pytest.mark.integration

CASES = [
    pytest.param(contract, scenario, id=f"{contract.service}-{scenario.name}")
    for contract in CONTRACTS.values()
    for scenario in contract.scenarios
]
# Every permutation is tried: keep scenarios small (6 events make 720 permutations).
MAX_STEPS = 5


def anonymous(state: State, saga: Saga) -> Any:
    """``state`` with this play's order and saga ids replaced, to compare it with another's."""
    text = json.dumps(state, sort_keys=True, default=str)
    text = text.replace(saga.order_id, "<order>").replace(str(saga.correlation_id), "<saga>")
    return json.loads(text)


def assert_no_op(runner: HandlerRunner, envelope: Envelope, state: Callable[[], State]) -> None:
    """``envelope`` once more through the inbox, then to its handler alone: no effect."""
    before = state(), runner.effects()
    again = runner.deliver(envelope)
    assert again.outcome is Outcome.DUPLICATE
    assert again.emitted == ()
    # The inbox stopped it before its handler, so only the handler alone could change state.
    alone = runner.apply(envelope)
    assert alone.emitted == (), (
        f"{envelope.event_type} handled again without the inbox emitted {alone.event_types}"
    )
    assert (state(), runner.effects()) == before, (
        f"{envelope.event_type} handled again without the inbox changed the state"
        " or requested an effect again"
    )


def play(
    open_runner: OpenRunner,
    contract: Contract,
    scenario: Scenario,
    order: Sequence[int],
    *,
    redeliver: bool = False,
    eager: bool = True,
) -> Any:
    """Deliver the scenario's events in ``order``; what settled (see ``Contract.settled``).

    With ``redeliver``, every event is delivered again right after it was applied, and
    all of them once more at the end, each time to no effect (``assert_no_op``). The
    service's effects are settled (their calls made, their outcomes decided) right after
    each delivery when ``eager``, otherwise only once every event has arrived; and in
    either case at the end, until none is due.
    """
    dependencies = contract.dependencies()
    with open_runner(contract.service, dependencies) as runner:
        saga = contract.start(runner)
        if scenario.prepare is not None:
            scenario.prepare(runner, saga)
        steps = scenario.steps(saga)

        def state() -> State:
            return contract.state(runner, saga, dependencies)

        delivered: list[Envelope] = []
        for index in order:
            envelope = saga.envelope(steps[index].event)
            delivery = runner.deliver(envelope)
            assert delivery.outcome is Outcome.APPLIED, f"{steps[index].label}: {delivery}"
            delivered.append(envelope)
            if eager:
                runner.settle_all()
            if redeliver:
                assert_no_op(runner, envelope, state)
        runner.settle_all()
        if redeliver:
            for envelope in delivered:
                assert_no_op(runner, envelope, state)
        assert runner.due_effects() == []
        return anonymous(contract.settled(state()), saga)


def arrival_orders(scenario: Scenario) -> list[tuple[int, ...]]:
    """Every order in which the scenario's events could arrive, the declared one first:
    each permutation in which no step comes before a step it comes ``after``."""
    steps = scenario.steps(Saga.new())
    assert len(steps) <= MAX_STEPS, f"{scenario.name}: keep a scenario to {MAX_STEPS} steps"
    orders = [
        order
        for order in itertools.permutations(range(len(steps)))
        if all(steps[i].can_arrive([steps[j] for j in order[:n]]) for n, i in enumerate(order))
    ]
    declared = tuple(range(len(steps)))
    assert orders and orders[0] == declared, f"{scenario.name}: the declared order cannot happen"
    return orders


def labels(scenario: Scenario, order: Sequence[int]) -> str:
    steps = scenario.steps(Saga.new())
    return " → ".join(steps[i].label for i in order)


# --- the contract --------------------------------------------------------------------------


@pytest.mark.parametrize(("contract", "scenario"), CASES)
def test_a_redelivered_event_changes_nothing(
    handler_runner: OpenRunner, contract: Contract, scenario: Scenario
) -> None:
    for order in arrival_orders(scenario):
        try:
            play(handler_runner, contract, scenario, order, redeliver=True)
        except AssertionError as exc:
            raise AssertionError(f"in the order {labels(scenario, order)}: {exc}") from exc


@pytest.mark.parametrize(("contract", "scenario"), CASES)
def test_every_arrival_order_settles_alike(
    handler_runner: OpenRunner, contract: Contract, scenario: Scenario
) -> None:
    declared, *others = arrival_orders(scenario)
    expected = play(handler_runner, contract, scenario, declared)
    timings = [True, False] if SYSTEM.service(contract.service).effects else [True]
    differing = {
        labels(scenario, order) + ("" if eager else " (calls answered late)"): settled
        for order in [declared, *others]
        for eager in timings
        if (order, eager) != (declared, True)
        if (settled := play(handler_runner, contract, scenario, order, eager=eager)) != expected
    }
    assert not differing, (
        f"{len(differing)} of {len(others) + 1} orders settle otherwise than "
        f"{labels(scenario, declared)}:\n"
        + "\n".join(f"{order}:\n{differences(expected, s)}" for order, s in differing.items())
    )


def differences(expected: dict[str, Any], got: dict[str, Any]) -> str:
    return "\n".join(
        f"  {key}: {json.dumps(got.get(key))}, not {json.dumps(expected.get(key))}"
        for key in sorted(set(expected) | set(got))
        if expected.get(key) != got.get(key)
    )


# --- the contract covers the definition ----------------------------------------------------


def test_every_service_that_handles_events_has_its_part() -> None:
    assert sorted(CONTRACTS) == sorted(SYSTEM.consumers())


@pytest.mark.parametrize("contract", CONTRACTS.values(), ids=list(CONTRACTS))
def test_the_scenarios_play_every_event_the_service_handles_and_only_those(
    contract: Contract,
) -> None:
    handled = set(SYSTEM.service(contract.service).handles)
    played = {
        type(step.event) for scenario in contract.scenarios for step in scenario.steps(Saga.new())
    }
    assert played == handled


@pytest.mark.parametrize("contract", CONTRACTS.values(), ids=list(CONTRACTS))
def test_every_step_comes_after_its_causes_only(contract: Contract) -> None:
    """A step may come ``after`` another only if, by the definition, this service's reaction
    to the other emits an event from which the step's event follows: a cause, not a wish."""
    service = SYSTEM.service(contract.service)
    for scenario in contract.scenarios:
        for step in scenario.steps(Saga.new()):
            for cause in step.after:
                emits = service.handles[type(cause.event)].emits
                leads = set().union(*(SYSTEM.reachable(e) for e in emits))
                assert type(step.event) in leads, (
                    f"{scenario.name}: nothing {contract.service} emits on {cause.label} "
                    f"({', '.join(e.event_type for e in emits) or 'nothing'}) leads to {step.label}"
                )


# --- the runner itself ---------------------------------------------------------------------


def _sells_at_once(uow: Any, envelope: Envelope) -> None:
    created = envelope.payload_as(OrderCreated)
    uow.emit(StockSold(order_id=created.order_id, lines=[]), aggregate_id=created.order_id)


def _created(order_id: str) -> Envelope:
    event = OrderCreated(
        order_id=order_id,
        customer_id="customer-1",
        email=EMAIL,
        lines=LINES,
        card_token="tok_visa",
        shipping_address=ADDRESS,
    )
    return Envelope.new(event, aggregate_id=order_id, producer="orders")


def test_a_reaction_that_emits_what_it_does_not_declare_is_refused_and_rolled_back(
    handler_runner: OpenRunner,
) -> None:
    # Declared to emit StockReserved only: the runner holds it to that.
    wrong = Service(
        name="stock",
        emits=(StockReserved, StockSold),
        handles={OrderCreated: reaction(_sells_at_once, StockReserved)},
    )
    with handler_runner("stock", {}) as real:
        runner = HandlerRunner(wrong, real.conn)
        envelope = _created("order-1")
        for _ in range(2):  # rolled back, inbox record included: refused again, not a duplicate
            with pytest.raises(UndeclaredEventError, match="StockSold"):
                runner.deliver(envelope)
        assert runner.emitted == []


def test_an_event_the_service_does_not_handle_is_ignored(handler_runner: OpenRunner) -> None:
    with handler_runner("shipments", {"carrier": object(), "carrier_api": object()}) as runner:
        assert runner.deliver(_created("order-1")).outcome is Outcome.IGNORED
        assert runner.apply(_created("order-1")).outcome is Outcome.IGNORED


def test_the_runner_binds_the_dependencies_the_definition_asks_for(
    handler_runner: OpenRunner,
) -> None:
    with pytest.raises(DefinitionError, match="carrier"), handler_runner("shipments", {}):
        pass
