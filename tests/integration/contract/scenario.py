"""What the handler contract plays for each service: the events of one order, and how to read
the service's state back.

A scenario lists the events one service receives about one order. The contract plays them in
every order in which they could arrive: Kafka keeps no order across topics, and the contract
does not lean on the order within one producer's topic either. An event cannot arrive before
what caused it, though, so a step may come ``after`` other steps: those whose reaction, in
this service, sets off the chain that produces it (ShipmentScheduled answers the
OrderApproved that orders emits on PaymentSucceeded, so it comes after PaymentSucceeded).
The contract checks each against the system definition (the reaction to the earlier step
declares an event from which the later one is reachable), so ``after`` records a cause,
never a convenient exception; and which orders are played never depends on what the
service under test happens to emit.

``state`` reads all the service holds about the order (its repositories' rows, what its fakes
recorded, what it emitted): a redelivery must leave all of it as it was. ``settled`` is the
part that every arrival order must agree on; where it leaves something out, its docstring says
what and why.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from contracts.notifications import CustomerNotified
from contracts.orders import Address, OrderCancelled, OrderLine
from contracts.stock import PricedLine, StockLine
from saga_runtime import Envelope, Event
from saga_runtime.testing import HandlerRunner
from saga_system import SYSTEM

State = dict[str, Any]
Dependencies = dict[str, object]


@dataclass(frozen=True)
class Saga:
    """The order a scenario is about, as the service first knows it."""

    order_id: str
    correlation_id: UUID

    @classmethod
    def new(cls) -> Saga:
        return cls(order_id=f"order-{uuid.uuid4().hex[:12]}", correlation_id=uuid.uuid4())

    def envelope(self, event: Event) -> Envelope:
        """``event`` as its producer (per the system definition) would have emitted it."""
        producer = SYSTEM.producer(type(event))
        assert producer is not None, f"nobody emits {event.event_type}"
        return Envelope.new(
            event,
            aggregate_id=self.order_id,
            producer=producer,
            correlation_id=self.correlation_id,
        )


@dataclass(frozen=True, eq=False)
class Step:
    """One event of the scenario, arriving only ``after`` the steps that cause it."""

    event: Event
    after: tuple[Step, ...] = ()

    @property
    def label(self) -> str:
        kind = getattr(self.event, "kind", None)
        return self.event.event_type if kind is None else f"{self.event.event_type}({kind})"

    def can_arrive(self, delivered: Sequence[Step]) -> bool:
        return all(cause in delivered for cause in self.after)


@dataclass(frozen=True)
class Scenario:
    """The events of one order; ``prepare`` runs what happened before them, in order."""

    name: str
    steps: Callable[[Saga], list[Step]]
    prepare: Callable[[HandlerRunner, Saga], None] | None = None


def _everything(state: State) -> State:
    return state


def _new_saga(_runner: HandlerRunner) -> Saga:
    return Saga.new()


@dataclass(frozen=True)
class Contract:
    """One service's part: its scenarios, fresh fakes for each play, and its state."""

    service: str
    scenarios: tuple[Scenario, ...]
    state: Callable[[HandlerRunner, Saga, Dependencies], State]
    settled: Callable[[State], State] = _everything
    dependencies: Callable[[], Dependencies] = dict
    start: Callable[[HandlerRunner], Saga] = _new_saga


# --- reading state -------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON-like data, so states compare and print alike."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def emitted(runner: HandlerRunner) -> list[tuple[str, Any]]:
    """What the service emitted so far (type and payload), in the order it did."""
    return [(e.event_type, e.payload) for e in runner.emitted]


def unordered(items: list[Any]) -> list[Any]:
    """For what arrives, or is emitted, in an order that depends on the arrival order."""
    return sorted(items, key=repr)


# --- the data of one order -----------------------------------------------------------------

EMAIL = "ada@example.com"
CARD = "tok_visa"
ADDRESS = Address(
    name="Ada Lovelace", line1="Keizersgracht 1", city="Amsterdam", postal_code="1015", country="NL"
)
ABROAD = ADDRESS.model_copy(update={"country": "US", "city": "Boston", "postal_code": "02108"})
LINES = [OrderLine(sku="SKU-A", quantity=2), OrderLine(sku="SKU-B", quantity=1)]
PRICES = {"SKU-A": 1250, "SKU-B": 300}
TOTAL = sum(PRICES[line.sku] * line.quantity for line in LINES)
PRICED = [PricedLine(sku=x.sku, quantity=x.quantity, unit_price_cents=PRICES[x.sku]) for x in LINES]
UNITS = [StockLine(sku=x.sku, quantity=x.quantity) for x in LINES]
CARRIER = "TestPost"
ETA = date(2025, 1, 8)


def notified(saga: Saga, kind: Any) -> CustomerNotified:
    return CustomerNotified(order_id=saga.order_id, kind=kind, channels=["email"])


def cancelled(saga: Saga, code: Any, reason: str, previous: Any) -> OrderCancelled:
    return OrderCancelled(
        order_id=saga.order_id,
        email=EMAIL,
        reason_code=code,
        reason=reason,
        previous_status=previous,
    )
