"""What the runtime derives from the system definition, and the mistakes it refuses at start-up."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from pydantic import ValidationError

from contracts.orders import OrderCancelled, OrderCreated, OrderShipped
from contracts.payments import PaymentRefunded
from outbox_relay.settings import RelayProcessSettings
from saga_runtime import DefinitionError, Envelope, Outbox, OutboxUsageError, Service, reaction
from saga_runtime.lifecycle import composition_root
from saga_system import SYSTEM


def test_the_derived_topology_is_the_one_the_services_had_by_hand() -> None:
    # The subscriptions the five bootstraps used to list, now derived from the reactions.
    assert {s: SYSTEM.subscriptions(s) for s in SYSTEM.names} == {
        "orders": ["stock", "payments", "shipments", "notifications"],
        "stock": ["orders"],
        "payments": ["orders", "stock"],
        "shipments": ["orders"],
        "notifications": ["orders"],
    }
    assert SYSTEM.subscribers("stock") == ["orders", "payments"]
    assert SYSTEM.outboxes() == SYSTEM.names
    assert "payments.dead-letters" in SYSTEM.topics()
    assert SYSTEM.consumer_groups("t.")["stock"] == "t.stock"


def test_every_service_has_a_composition_root_that_binds_all_its_handlers() -> None:
    for name in SYSTEM.names:
        root = composition_root(SYSTEM, name)
        assert callable(root.compose)
        assert isinstance(root.Settings, type)


def on_thing(uow: Any, envelope: Any, *, provider: Any) -> None:
    provider(envelope)


def test_a_handler_parameter_no_dependency_fills_is_an_error_at_start_up() -> None:
    service = Service(
        name="refunds",
        emits=(PaymentRefunded,),
        handles={OrderCancelled: reaction(on_thing, PaymentRefunded)},
    )
    with pytest.raises(DefinitionError, match="needs provider"):
        service.handlers({"provder": object()})  # the typo is caught here, not per message
    seen: list[Any] = []
    bound = service.handlers({"provider": seen.append})
    bound["OrderCancelled"](None, "envelope")
    assert seen == ["envelope"]


def test_a_handler_map_keyed_by_an_event_nobody_emits_refuses_to_build() -> None:
    class OrderShiped(OrderShipped):  # a typo'd copy: nobody emits it
        event_type = "OrderShiped"

    loyalty = Service(name="loyalty", handles={OrderShiped: reaction(on_thing)})
    with pytest.raises(DefinitionError, match="loyalty handles OrderShiped, which no service"):
        SYSTEM.with_service(loyalty)


class _InTransaction:
    class info:  # mimics psycopg's Connection.info
        transaction_status = TransactionStatus.INTRANS

    def execute(self, *_: Any) -> Any:
        raise AssertionError("an undeclared event must be refused before any SQL")


def test_the_outbox_refuses_an_event_its_service_does_not_declare() -> None:
    outbox = Outbox(schema="stock", topic="stock.events", event_types=["StockReserved"])
    envelope = Envelope.new(
        OrderCancelled(
            order_id="o-1",
            email="a@example.com",
            reason_code="timeout",
            reason="late",
            previous_status="PENDING",
        ),
        aggregate_id="o-1",
        producer="stock",
    )
    with pytest.raises(OutboxUsageError, match="stock may not emit OrderCancelled"):
        outbox.add(_InTransaction(), envelope)  # type: ignore[arg-type]


def test_the_relay_refuses_an_outbox_the_system_does_not_have() -> None:
    assert RelayProcessSettings(outboxes="orders, stock").outboxes == ["orders", "stock"]
    with pytest.raises(ValidationError, match="unknown outbox order"):
        RelayProcessSettings(outboxes="order")
    assert RelayProcessSettings().outboxes == SYSTEM.outboxes()


def test_the_start_event_is_a_command_of_the_service_that_emits_it() -> None:
    assert SYSTEM.start is OrderCreated
    assert OrderCreated in SYSTEM.service("orders").commands
