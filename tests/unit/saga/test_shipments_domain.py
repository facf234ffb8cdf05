"""Shipments under any interleaving and duplication of one order's events and of the
carrier's answers to its booking (hypothesis), and each decision on its own."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from contracts.orders import Address, OrderApproved, OrderCancelled, OrderLine
from contracts.shipments import ShipmentCancelled, ShipmentFailed, ShipmentScheduled
from shipments import domain
from shipments.domain import Booked, BookingFailed, Carrier, Shipment

CARRIER = Carrier(
    name="Parcelo", countries=frozenset({"US", "DE"}), refused_postal_codes=frozenset({"00000"})
)
TODAY = date(2026, 11, 21)
ETA = date(2026, 11, 24)  # TODAY + the carrier's 3 delivery days


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
BOOKED = Booked(shipment_id="shp_1", estimated_delivery=ETA)
REFUSED = BookingFailed(reason="the carrier did not book: timed out")

Input = OrderApproved | OrderCancelled | Booked | BookingFailed


def step(state: Shipment | None, event: Input) -> domain.Decision:
    if isinstance(event, OrderApproved):
        return domain.schedule(state, event, carrier=CARRIER, today=TODAY)
    if isinstance(event, OrderCancelled):
        return domain.cancel(state, event)
    return domain.booked(state, event)


def run(events: list[Input]) -> tuple[Shipment | None, list[object], int]:
    """The final state, every event emitted, and how many bookings were asked for."""
    state: Shipment | None = None
    emitted: list[object] = []
    bookings = 0
    for event in events:
        decision = step(state, event)
        state = decision.shipment
        emitted += decision.events
        bookings += decision.booking is not None
    return state, emitted, bookings


NAMED: dict[str, Input] = {
    "approved": approved(),
    "cancelled": CANCELLED,
    "booked": BOOKED,
    "refused": REFUSED,
}
inputs = st.lists(st.sampled_from(sorted(NAMED)), min_size=1, max_size=8).map(
    lambda names: [NAMED[n] for n in names]
)


@given(inputs)
def test_at_most_one_booking_and_shipment_and_none_live_after_a_cancellation(
    events: list[Input],
) -> None:
    state, emitted, bookings = run(events)
    scheduled = [e for e in emitted if isinstance(e, ShipmentScheduled)]
    cancelled = [e for e in emitted if isinstance(e, ShipmentCancelled)]
    assert bookings <= 1, "the carrier is asked once per order"
    assert len(scheduled) <= 1
    assert len(cancelled) <= len(scheduled), "only a scheduled shipment is ever cancelled"
    if any(isinstance(e, OrderCancelled) for e in events):
        assert state is not None and not state.live
    first = next((e for e in events if isinstance(e, OrderApproved | OrderCancelled)), None)
    if isinstance(first, OrderCancelled):
        assert (scheduled, bookings) == ([], 0), "cancelled before approval: never booked"


@given(inputs)
def test_an_answer_to_no_booking_in_flight_changes_nothing(events: list[Input]) -> None:
    """Late or repeated answers (an expired lease, an operator's retry) never move a
    shipment that is not waiting for one."""
    state: Shipment | None = None
    for event in events:
        decision = step(state, event)
        waiting = state is not None and state.status in ("booking", "cancelling")
        if isinstance(event, Booked | BookingFailed) and not waiting:
            assert (decision.shipment, decision.events) == (state, [])
        state = decision.shipment


def test_an_approval_asks_the_carrier_to_book_and_emits_nothing_yet() -> None:
    decision = step(None, approved())
    assert decision.events == []
    assert decision.shipment == Shipment(
        "o-1", "booking", carrier="Parcelo", estimated_delivery=ETA
    )
    assert decision.booking is not None
    request = decision.booking.request()
    assert (request["order_id"], request["carrier"]) == ("o-1", "Parcelo")
    assert (request["ship_date"], request["estimated_delivery"]) == ("2026-11-21", "2026-11-24")
    assert request["address"]["postal_code"] == "10001"


def test_a_booking_schedules_the_shipment_with_the_carriers_answer() -> None:
    state, emitted, _ = run([approved(), Booked("shp_9", date(2026, 11, 25))])
    assert state is not None and state.live
    assert (state.shipment_id, state.estimated_delivery) == ("shp_9", date(2026, 11, 25))
    assert emitted == [
        ShipmentScheduled(
            order_id="o-1",
            shipment_id="shp_9",
            carrier="Parcelo",
            estimated_delivery=date(2026, 11, 25),
        )
    ]


def test_a_failed_booking_fails_the_shipment_and_says_why() -> None:
    state, [failed], _ = run([approved(), REFUSED])
    assert state is not None and (state.status, state.reason) == ("failed", REFUSED.reason)
    assert failed == ShipmentFailed(
        order_id="o-1", reason_code="booking_failed", reason=REFUSED.reason
    )


def test_a_cancellation_while_booking_ends_cancelled_whatever_the_carrier_answers() -> None:
    state, emitted, _ = run([approved(), CANCELLED])
    assert state is not None and state.status == "cancelling" and emitted == []

    booked, emitted, _ = run([approved(), CANCELLED, BOOKED])
    assert booked is not None and (booked.status, booked.shipment_id) == ("cancelled", "shp_1")
    assert emitted == [], "never announced as scheduled: nothing to call off downstream"

    refused, emitted, _ = run([approved(), CANCELLED, REFUSED])
    assert refused is not None and (refused.status, refused.shipment_id) == ("cancelled", None)
    assert emitted == [], "the order is cancelled already: no ShipmentFailed"


def test_a_scheduled_shipment_is_called_off_on_cancellation() -> None:
    state, emitted, _ = run([approved(), BOOKED, CANCELLED])
    assert state is not None and state.status == "cancelled"
    assert emitted[-1] == ShipmentCancelled(order_id="o-1", shipment_id="shp_1")


def test_a_late_approval_after_a_cancellation_books_nothing() -> None:
    state, emitted, bookings = run([CANCELLED, approved()])
    assert state is not None and state.status == "voided"
    assert (emitted, bookings) == ([], 0)


def test_unserviceable_address_fails_at_once_without_asking_the_carrier() -> None:
    state, emitted, bookings = run([approved(country="BR")])
    assert state is not None and state.status == "failed" and bookings == 0
    [failed] = emitted
    assert isinstance(failed, ShipmentFailed) and "BR" in failed.reason
    assert failed.reason_code == "unserviceable_address"
    _, emitted, bookings = run([approved(postal_code="00000")])
    assert isinstance(emitted[0], ShipmentFailed) and bookings == 0
