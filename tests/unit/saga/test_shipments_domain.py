"""Shipments under any interleaving and duplication of one order's events (hypothesis)."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from contracts.orders import Address, OrderApproved, OrderCancelled, OrderLine
from contracts.shipments import ShipmentCancelled, ShipmentFailed, ShipmentScheduled
from shipments import domain
from shipments.domain import Carrier

CARRIER = Carrier(
    name="Parcelo", countries=frozenset({"US", "DE"}), refused_postal_codes=frozenset({"00000"})
)
TODAY = date(2026, 11, 21)


def approved(country: str = "US", postal_code: str = "10001") -> OrderApproved:
    return OrderApproved(
        order_id="o-1",
        customer_id="c-1",
        email="a@example.com",
        lines=[OrderLine(sku="SKU-1", quantity=1)],
        total_cents=1000,
        shipping_address=Address(
            name="A", line1="1 Main St", city="NYC", postal_code=postal_code, country=country
        ),
    )


CANCELLED = OrderCancelled(
    order_id="o-1",
    email="a@example.com",
    reason_code="customer_request",
    reason="changed mind",
    previous_status="APPROVED",
)


def run(events: list[object]) -> tuple[domain.Shipment | None, list[object]]:
    state: domain.Shipment | None = None
    emitted: list[object] = []
    for n, event in enumerate(events):
        if isinstance(event, OrderApproved):
            state, out = domain.schedule(
                state, event, carrier=CARRIER, today=TODAY, shipment_id=f"s{n}"
            )
        else:
            assert isinstance(event, OrderCancelled)
            state, out = domain.cancel(state, event)
        emitted += out
    return state, emitted


deliveries = st.lists(st.sampled_from(["approved", "cancelled"]), min_size=1, max_size=8).map(
    lambda names: [approved() if n == "approved" else CANCELLED for n in names]
)


@given(deliveries)
def test_at_most_one_shipment_and_none_live_after_a_cancellation(events: list[object]) -> None:
    state, emitted = run(events)
    scheduled = [e for e in emitted if isinstance(e, ShipmentScheduled)]
    cancelled = [e for e in emitted if isinstance(e, ShipmentCancelled)]
    assert len(scheduled) <= 1
    assert len(cancelled) <= len(scheduled), "only a scheduled shipment is ever cancelled"
    if any(isinstance(e, OrderCancelled) for e in events):
        assert state is not None and not state.live
    if isinstance(events[0], OrderCancelled):
        assert scheduled == [], "cancelled before approval: never shipped"


def test_unserviceable_address_fails_with_the_reason() -> None:
    state, emitted = run([approved(country="BR")])
    assert state is not None and state.status == "failed"
    [failed] = emitted
    assert isinstance(failed, ShipmentFailed) and "BR" in failed.reason
    _, emitted = run([approved(postal_code="00000")])
    assert isinstance(emitted[0], ShipmentFailed)


def test_scheduled_shipment_has_an_eta_from_the_carrier() -> None:
    _, [scheduled] = run([approved()])
    assert isinstance(scheduled, ShipmentScheduled)
    assert scheduled.estimated_delivery == date(2026, 11, 24)
