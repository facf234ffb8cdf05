"""The checks on the system definition: ``SYSTEM`` passes them, and each one catches the
broken definition it exists for (a toy system, or ``SYSTEM`` with one thing changed)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from contracts.notifications import CustomerNotified
from contracts.orders import OrderApproved, OrderCancelled, OrderCreated, OrderShipped
from contracts.payments import PaymentFailed, PaymentRefunded
from contracts.shipments import ShipmentScheduled
from contracts.stock import StockReleased, StockReserved, StockSold
from saga_runtime import Event
from saga_runtime.system import DefinitionError, Reaction, Service, System, reaction
from saga_system import SYSTEM

FINALS = "(OrderShipped, OrderCancelled)"


def _noop(uow: Any, envelope: Any) -> None:
    """A handler for toy definitions (never called)."""


# --- toy events and a toy system: a shop and its stockroom ------------------------------------


class Placed(Event):
    event_type = "Placed"


class Done(Event):
    event_type = "Done"


class Dropped(Event):
    event_type = "Dropped"


class Reserved(Event):
    event_type = "Reserved"


class Rejected(Event):
    event_type = "Rejected"


class Returned(Event):
    event_type = "Returned"


class Ghost(Event):
    """An event class no service emits: a typo in a handler map."""

    event_type = "Ghost"


def _shop(**changes: Any) -> Service:
    shop = Service(
        name="shop",
        emits=(Placed, Done, Dropped),
        commands=(Placed,),
        handles={Reserved: reaction(_noop, Done), Rejected: reaction(_noop, Dropped)},
    )
    return dataclasses.replace(shop, **changes)


def _stockroom(**changes: Any) -> Service:
    stockroom = Service(
        name="stockroom",
        emits=(Reserved, Rejected, Returned),
        handles={Placed: reaction(_noop, Reserved, Rejected), Dropped: reaction(_noop, Returned)},
    )
    return dataclasses.replace(stockroom, **changes)


def _toy(*services: Service, **changes: Any) -> System:
    saga: dict[str, Any] = {
        "start": Placed,
        "final": (Done, Dropped),
        "cancelled": Dropped,
        "compensations": {Reserved: (Returned,)},
        "no_effect": (Rejected,),
        "terminal": (Done, Returned),
    }
    return System(services=services or (_shop(), _stockroom()), **{**saga, **changes})


def _refused(*services: Service, **changes: Any) -> str:
    with pytest.raises(DefinitionError) as refused:
        _toy(*services, **changes)
    return str(refused.value)


# --- SYSTEM with one thing changed ------------------------------------------------------------


def _with_reaction(service: str, event: type[Event], react: Reaction | None) -> System:
    """SYSTEM with ``service``'s reaction to ``event`` replaced (None: removed)."""
    handles = dict(SYSTEM.service(service).handles)
    if react is None:
        del handles[event]
    else:
        handles[event] = react
    return _with_service(dataclasses.replace(SYSTEM.service(service), handles=handles))


def _with_service(changed: Service) -> System:
    services = tuple(changed if s.name == changed.name else s for s in SYSTEM)
    return dataclasses.replace(SYSTEM, services=services)


def _grown(service: Service, **changes: Any) -> System:
    """SYSTEM and one service more, with the saga's fields changed as given."""
    return dataclasses.replace(SYSTEM, services=(*SYSTEM.services, service), **changes)


def _handler(service: str, event: type[Event]) -> Any:
    return SYSTEM.service(service).handles[event].handler


# --- the declared system ----------------------------------------------------------------------


def test_the_declared_system_is_consistent_and_its_saga_sound() -> None:
    assert SYSTEM.problems() == []
    assert SYSTEM.saga_problems() == []


def test_the_toy_system_passes_every_check() -> None:
    """So that each broken variant below fails for the one reason it was broken for."""
    toy = _toy()
    assert toy.problems() == []
    assert toy.saga_problems() == []


# --- structure: System refuses to build -------------------------------------------------------


def test_a_handler_map_keyed_by_an_event_nobody_emits_refuses_to_build() -> None:
    """A typo in a handler map is an error at start-up, not an event silently ignored."""
    typo = _stockroom(handles={**_stockroom().handles, Ghost: reaction(_noop)})
    assert "stockroom handles Ghost, which no service emits" in _refused(_shop(), typo)

    loyalty = Service(name="loyalty", handles={Ghost: reaction(_noop)})
    with pytest.raises(DefinitionError, match="loyalty handles Ghost, which no service emits"):
        SYSTEM.with_service(loyalty)


def test_a_handler_map_keyed_by_anything_but_an_event_class_refuses_to_build() -> None:
    by_name = _stockroom(handles={"Placed": reaction(_noop, Reserved, Rejected)})
    message = _refused(_shop(), by_name)
    assert "stockroom: 'Placed' is not an Event class" in message
    not_a_reaction = _stockroom(handles={Placed: _noop})
    assert "the reaction to" in _refused(_shop(), not_a_reaction)


def test_an_emitted_event_nobody_handles_must_be_declared_terminal() -> None:
    message = _refused(terminal=(Returned,))
    assert "Done is emitted but no service handles it (nor is terminal)" in message


def test_duplicate_services_and_event_types_refuse_to_build() -> None:
    assert "duplicate service: shop" in _refused(_shop(), _stockroom(), _shop(emits=()))

    class OtherPlaced(Event):
        event_type = "Placed"

    twin = Service(name="kiosk", emits=(OtherPlaced,), commands=(OtherPlaced,))
    message = _refused(_shop(), _stockroom(), twin, terminal=(Done, Returned, OtherPlaced))
    assert "duplicate event type emitted by more than one service: Placed" in message


def test_a_reaction_may_emit_only_its_own_services_events() -> None:
    meddling = _stockroom(handles={**_stockroom().handles, Placed: reaction(_noop, Done)})
    message = _refused(_shop(), meddling)
    assert "stockroom: its reaction to Placed emits Done, which is not among stockroom's" in message


def test_the_saga_names_only_emitted_events() -> None:
    assert "Ghost is named by the saga but no service emits it" in _refused(start=Ghost)


# --- every saga path ends in a final state ----------------------------------------------------


def test_a_failure_that_cancels_nothing_strands_the_saga() -> None:
    """orders forgets to cancel the order when the payment fails."""
    broken = _with_reaction("orders", PaymentFailed, reaction(_handler("orders", PaymentFailed)))
    problems = broken.saga_problems()
    for trigger in ("OrderCreated", "StockReserved"):
        assert (
            f"payments: its reaction to {trigger} may emit PaymentFailed, after which no final "
            f"event {FINALS} can follow"
        ) in problems
    assert all("PaymentSucceeded" not in p for p in problems)


def test_a_step_that_leads_to_no_final_state_strands_the_saga() -> None:
    """orders records the booked shipment but never ships the order."""
    handler = _handler("orders", ShipmentScheduled)
    broken = _with_reaction("orders", ShipmentScheduled, reaction(handler))
    problems = broken.saga_problems()
    assert (
        "shipments: its reaction to OrderApproved may emit ShipmentScheduled, after which no "
        f"final event {FINALS} can follow"
    ) in problems
    assert (
        "OrderShipped (orders) can never happen: no reaction that follows OrderCreated may "
        "emit it, nor is it a command"
    ) in problems


def test_a_saga_that_can_never_end_is_reported_from_its_start() -> None:
    stuck = _shop(handles={Reserved: reaction(_noop), Rejected: reaction(_noop)})
    problems = _toy(stuck, _stockroom(), terminal=(Done, Returned, Dropped)).saga_problems()
    assert problems[0] == (
        "from Placed the declared reactions are not sure to reach a final event (Done, Dropped)"
    )
    assert "Done (shop) can never happen: no reaction that follows Placed may emit it, " in (
        "\n".join(problems)
    )


def test_a_notification_is_a_side_branch_not_a_stranded_saga() -> None:
    """CustomerNotified after OrderApproved leads to no final event, and need not: shipments
    carries the saga on. A reaction whose every outcome is a dead end is a side branch."""
    assert CustomerNotified in SYSTEM.reachable(OrderApproved)
    assert not SYSTEM.reachable(CustomerNotified) & set(SYSTEM.final)
    assert SYSTEM.saga_problems() == []


def test_the_outcome_is_decided_once() -> None:
    """orders cancels an order it has shipped once the customer is told."""
    other = _handler("orders", CustomerNotified)
    broken = _with_reaction("orders", CustomerNotified, reaction(other, OrderCancelled))
    problems = broken.saga_problems()
    assert (
        "OrderCancelled may follow the final event OrderShipped: the outcome is decided twice"
    ) in problems


def test_the_aftermath_never_starts_the_saga_again() -> None:
    """orders places the order again once the stock is back."""
    other = _handler("orders", StockReleased)
    broken = _with_reaction("orders", StockReleased, reaction(other, OrderCreated))
    problems = broken.saga_problems()
    assert (
        "OrderCreated may follow the final event OrderCancelled: the aftermath starts the saga "
        "again"
    ) in problems


def test_a_saga_needs_a_final_event() -> None:
    toy = _toy(final=(), cancelled=None, compensations={}, terminal=(Done, Dropped, Returned))
    assert toy.saga_problems() == ["the saga starts with Placed but declares no final event"]


def test_a_system_without_a_start_has_no_saga_to_check() -> None:
    assert _toy(start=None).saga_problems() == []


# --- compensation covers every step that has an effect ----------------------------------------


def test_a_charge_that_is_never_refunded_is_named() -> None:
    """payments forgets to refund on cancellation."""
    handler = _handler("payments", OrderCancelled)
    broken = _with_reaction("payments", OrderCancelled, reaction(handler))
    assert (
        "PaymentSucceeded is undone by PaymentRefunded, but payments reacts to OrderCancelled "
        "without emitting PaymentRefunded"
    ) in broken.saga_problems()


def test_a_service_with_a_compensated_step_must_handle_the_cancellation() -> None:
    broken = _with_reaction("shipments", OrderCancelled, None)
    assert (
        "ShipmentScheduled is undone by ShipmentCancelled, but shipments does not handle "
        "OrderCancelled"
    ) in broken.saga_problems()


def test_a_step_with_no_declared_compensation_is_named() -> None:
    compensations = {k: v for k, v in SYSTEM.compensations.items() if k is not StockSold}
    broken = dataclasses.replace(SYSTEM, compensations=compensations)
    assert broken.saga_problems() == [
        "StockSold (stock) is a step before the outcome with no compensation: declare the "
        "events that undo it in compensations, or list it in no_effect if it changes nothing "
        "outside its service"
    ]


class GiftWrapped(Event):
    event_type = "GiftWrapped"


class GiftUnwrapped(Event):
    event_type = "GiftUnwrapped"


def _wrapping(*, undo: bool) -> Service:
    handles: dict[type[Event], Reaction] = {OrderCreated: reaction(_noop, GiftWrapped)}
    if not undo:
        return Service(name="wrapping", emits=(GiftWrapped,), handles=handles)
    handles[OrderCancelled] = reaction(_noop, GiftUnwrapped)
    return Service(name="wrapping", emits=(GiftWrapped, GiftUnwrapped), handles=handles)


def test_a_new_step_must_declare_its_compensation_or_that_it_has_no_effect() -> None:
    """A sixth service that wraps gifts once an order is placed: wrapping is a step."""
    terminal = (GiftWrapped, GiftUnwrapped)
    new = _grown(_wrapping(undo=False), terminal=terminal)
    assert new.saga_problems() == [
        "GiftWrapped (wrapping) is a step before the outcome with no compensation: declare the "
        "events that undo it in compensations, or list it in no_effect if it changes nothing "
        "outside its service"
    ]
    no_effect = dataclasses.replace(new, no_effect=(*SYSTEM.no_effect, GiftWrapped))
    assert no_effect.saga_problems() == []

    compensated = _grown(
        _wrapping(undo=True),
        terminal=terminal,
        compensations={**SYSTEM.compensations, GiftWrapped: (GiftUnwrapped,)},
    )
    assert compensated.saga_problems() == []


def test_a_step_is_either_compensated_or_without_effect() -> None:
    broken = dataclasses.replace(SYSTEM, no_effect=(*SYSTEM.no_effect, StockReserved))
    assert broken.saga_problems() == [
        "StockReserved is both compensated and declared to have no effect"
    ]


def test_compensations_need_a_cancelled_event() -> None:
    problems = dataclasses.replace(SYSTEM, cancelled=None).saga_problems()
    assert "compensations are declared but no cancelled event triggers them" in problems


def test_a_compensation_names_its_undo_events() -> None:
    toy = _toy(compensations={Reserved: ()}, no_effect=(Rejected, Returned))
    assert "the compensation of Reserved names no event" in toy.saga_problems()


def test_the_aftermath_needs_no_compensation() -> None:
    """A sixth service reacting to a final event (loyalty points for a shipped order) adds
    no step to undo."""

    class PointsAwarded(Event):
        event_type = "PointsAwarded"

    loyalty = Service(
        name="loyalty",
        emits=(PointsAwarded,),
        handles={OrderShipped: reaction(_noop, PointsAwarded)},
    )
    grown = _grown(loyalty, terminal=(PointsAwarded,))
    assert grown.saga_problems() == []
    assert PaymentRefunded in grown.reachable(OrderCancelled)
