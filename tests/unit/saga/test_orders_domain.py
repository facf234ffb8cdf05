"""Orders under any interleaving and duplication of the events about one order (hypothesis)."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.orders import Address, OrderApproved, OrderCancelled, OrderLine, OrderShipped
from orders import domain
from orders.domain import Order, OrderStateError

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def new_order() -> Order:
    order, [_created] = domain.place(
        order_id="o-1",
        customer_id="c-1",
        email="a@example.com",
        lines=[
            OrderLine(sku="A", quantity=1),
            OrderLine(sku="B", quantity=2),
            OrderLine(sku="A", quantity=3),
        ],
        card_token="tok_ok",
        shipping_address=Address(name="A", line1="1 St", city="X", postal_code="1", country="US"),
        correlation_id=uuid.uuid4(),
        now=NOW,
    )
    return order


STEPS = {
    "priced": lambda o: domain.record_pricing(o, [domain.PricedLine("A", 4, 100)], 400),
    "stock_failed": lambda o: domain.fail_before_approval(o, "out_of_stock", "A: none left"),
    "paid": lambda o: domain.approve(o, 400),
    "payment_failed": lambda o: domain.fail_before_approval(o, "payment_declined", "declined"),
    "shipped": lambda o: domain.ship(o, shipment_id="s-1", carrier="C"),
    "shipment_failed": lambda o: domain.fail_shipment(o, "no carrier"),
    "expired": lambda o: domain.expire(
        o, now=NOW + timedelta(hours=1), timeout=timedelta(minutes=1)
    ),
    "customer_cancel": lambda o: (
        domain.cancel(o, "customer_request", "by customer") if not o.final else (o, [])
    ),
}


@given(st.lists(st.sampled_from(sorted(STEPS)), max_size=12))
def test_any_interleaving_keeps_the_order_consistent(steps: list[str]) -> None:
    order = new_order()
    emitted: list[object] = []
    history = [order.status]
    for step in steps:
        was_final = order.final
        order, events = STEPS[step](order)
        if was_final:
            assert events == [], "a final order emits nothing more"
        emitted += events
        history.append(order.status)

    approved = [e for e in emitted if isinstance(e, OrderApproved)]
    cancelled = [e for e in emitted if isinstance(e, OrderCancelled)]
    shipped = [e for e in emitted if isinstance(e, OrderShipped)]
    assert len(approved) <= 1 and len(cancelled) <= 1 and len(shipped) <= 1
    assert not (shipped and cancelled), "shipped and cancelled exclude each other"
    if shipped:
        assert emitted.index(approved[0]) < emitted.index(shipped[0])
    if cancelled:
        assert order.status == "CANCELLED" and order.reason_code == cancelled[0].reason_code
    allowed = {
        ("PENDING", "PENDING"),
        ("PENDING", "APPROVED"),
        ("PENDING", "CANCELLED"),
        ("APPROVED", "APPROVED"),
        ("APPROVED", "SHIPPED"),
        ("APPROVED", "CANCELLED"),
        ("SHIPPED", "SHIPPED"),
        ("CANCELLED", "CANCELLED"),
    }
    assert all(pair in allowed for pair in itertools.pairwise(history))


def test_lines_of_the_same_sku_are_merged() -> None:
    assert [(line.sku, line.quantity) for line in new_order().lines] == [("A", 4), ("B", 2)]


def test_customer_cannot_cancel_a_final_order() -> None:
    shipped, _ = domain.ship(domain.approve(new_order(), 400)[0], shipment_id="s", carrier="c")
    with pytest.raises(OrderStateError):
        domain.cancel_by_customer(shipped)
    cancelled, _ = domain.cancel_by_customer(new_order())
    with pytest.raises(OrderStateError):
        domain.cancel_by_customer(cancelled)


def test_cancelling_an_approved_order_says_so() -> None:
    approved, _ = domain.approve(new_order(), 400)
    _, [event] = domain.cancel_by_customer(approved)
    assert isinstance(event, OrderCancelled) and event.previous_status == "APPROVED"


def test_deadline_only_cancels_pending_orders_past_the_timeout() -> None:
    order = new_order()
    assert (
        domain.expire(order, now=NOW + timedelta(seconds=30), timeout=timedelta(minutes=1))[1] == []
    )
    expired, [event] = domain.expire(
        order, now=NOW + timedelta(minutes=2), timeout=timedelta(minutes=1)
    )
    assert expired.status == "CANCELLED" and isinstance(event, OrderCancelled)
    assert event.reason_code == "timeout"
