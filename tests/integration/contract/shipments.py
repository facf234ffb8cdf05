"""Shipments' part of the handler contract: an approved order shipped, called off, or refused."""

from __future__ import annotations

from datetime import timedelta

from contracts.orders import Address, OrderApproved
from saga_runtime.testing import HandlerRunner
from shipments.domain import Carrier
from shipments.repository import ShipmentRepository
from tests.integration.contract.scenario import (
    ABROAD,
    ADDRESS,
    CARRIER,
    EMAIL,
    ETA,
    LINES,
    TOTAL,
    Contract,
    Dependencies,
    Saga,
    Scenario,
    State,
    Step,
    cancelled,
    emitted,
    plain,
)

DELIVERY_DAYS = 2


def dependencies() -> Dependencies:
    carrier = Carrier(CARRIER, countries=frozenset({"NL", "BE"}), delivery_days=DELIVERY_DAYS)
    return {
        "carrier": carrier,
        "today": lambda: ETA - timedelta(days=DELIVERY_DAYS),
        "booking_seconds": 0.0,
    }


def approved(saga: Saga, address: Address = ADDRESS) -> Step:
    return Step(
        OrderApproved(
            order_id=saga.order_id,
            customer_id="customer-1",
            email=EMAIL,
            lines=LINES,
            total_cents=TOTAL,
            shipping_address=address,
        )
    )


def shipped(saga: Saga) -> list[Step]:
    return [approved(saga)]


def cancelled_by_customer(saga: Saga) -> list[Step]:
    """An approved order cancelled by its customer: shipments may hear of it either way round."""
    why = cancelled(saga, "customer_request", "cancelled by the customer", "APPROVED")
    return [approved(saga), Step(why)]


def unserviceable(saga: Saga) -> list[Step]:
    """ShipmentFailed, and orders cancels."""
    refused = approved(saga, ABROAD)
    why = cancelled(saga, "shipment_failed", "no delivery", "APPROVED")
    return [refused, Step(why, after=(refused,))]


def state(runner: HandlerRunner, saga: Saga, _dependencies: Dependencies) -> State:
    return {
        "shipment": plain(ShipmentRepository(runner.conn).get(saga.order_id)),
        "emitted": emitted(runner),
    }


def settled(state: State) -> State:
    """Whether a shipment is live (with its carrier and delivery date), or why none could
    be. Left out: how a cancelled order came to have none. Cancelled after scheduling, the
    shipment is called off (ShipmentScheduled, then ShipmentCancelled); cancelled first, the
    order is never scheduled (no event): the row's status and the events differ, the
    parcels on their way do not. The shipment id is new each play."""
    shipment = state["shipment"]
    live = shipment["status"] == "scheduled"
    return {
        "live": live,
        "carrier": shipment["carrier"] if live else None,
        "estimated_delivery": shipment["estimated_delivery"] if live else None,
        "refused": shipment["reason"] if shipment["status"] == "failed" else None,
    }


CONTRACT = Contract(
    service="shipments",
    dependencies=dependencies,
    state=state,
    settled=settled,
    scenarios=(
        Scenario("shipped", shipped),
        Scenario("cancelled-by-customer", cancelled_by_customer),
        Scenario("unserviceable", unserviceable),
    ),
)
