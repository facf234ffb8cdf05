"""Shipments' part of the handler contract: an approved order shipped, called off, or refused
(before the carrier is asked, or by the carrier).

The carrier's booking is an effect: the contract plays each arrival order with the booking
answered at once and answered late, so ``cancelled-by-customer`` is played with the
cancellation arriving while the carrier books, too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from contracts.orders import Address, OrderApproved
from saga_runtime.testing import HandlerRunner
from shipments.carrier import SimulatedCarrier
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
# An address the carrier's own check passes but the carrier refuses when asked to book.
UNKNOWN_STREET = ADDRESS.model_copy(update={"line1": "Nowhere 0", "postal_code": "9999"})


class CarrierRefused(Exception):
    """The carrier's refusal: a terminal failure of the call, not retried."""


@dataclass(frozen=True)
class ContractCarrier:
    """The simulated carrier, answering at once, which refuses ``UNKNOWN_STREET``."""

    def book(self, request: dict[str, Any], key: str) -> dict[str, Any]:
        if request["address"]["postal_code"] == UNKNOWN_STREET.postal_code:
            raise CarrierRefused(f"no such address: {request['address']['line1']}")
        return SimulatedCarrier().book(request, key)


def dependencies() -> Dependencies:
    carrier = Carrier(CARRIER, countries=frozenset({"NL", "BE"}), delivery_days=DELIVERY_DAYS)
    return {
        "carrier": carrier,
        "carrier_api": ContractCarrier(),
        "today": lambda: ETA - timedelta(days=DELIVERY_DAYS),
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
    """ShipmentFailed before the carrier is asked, and orders cancels."""
    refused = approved(saga, ABROAD)
    why = cancelled(saga, "shipment_failed", "no delivery", "APPROVED")
    return [refused, Step(why, after=(refused,))]


def refused_by_the_carrier(saga: Saga) -> list[Step]:
    """ShipmentFailed on the carrier's answer. The cancellation that follows is left out:
    it answers the decision about the booking, which a play answering late would
    reach only after it (the steps' ``after`` orders events, not effects)."""
    return [approved(saga, UNKNOWN_STREET)]


def state(runner: HandlerRunner, saga: Saga, _dependencies: Dependencies) -> State:
    return {
        "shipment": plain(ShipmentRepository(runner.conn).get(saga.order_id)),
        "emitted": emitted(runner),
    }


def settled(state: State) -> State:
    """Whether a shipment is live (with its carrier and delivery date), or why none could
    be. Left out: how a cancelled order came to have none. Cancelled after scheduling, the
    shipment is called off (ShipmentScheduled, then ShipmentCancelled); cancelled while the
    carrier books, it ends cancelled on the carrier's answer (no event); cancelled first,
    the order is never booked (no event): the row's status and the events differ, the
    parcels on their way do not. The shipment id is new each play (derived from the
    order's id)."""
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
        Scenario("refused-by-the-carrier", refused_by_the_carrier),
    ),
)
