"""Each invariant rule fires on the violation it exists for, and only then."""

from __future__ import annotations

import copy

import pytest

from sagactl.invariants import Charge, Refund, Snapshot, check


def healthy() -> Snapshot:
    """One shipped order and one cancelled-after-payment order, all settled."""
    return Snapshot(
        orders={"shipped": "SHIPPED", "refunded": "CANCELLED"},
        timelines={
            "shipped": [
                "OrderCreated",
                "StockReserved",
                "PaymentSucceeded",
                "OrderApproved",
                "ShipmentScheduled",
                "OrderShipped",
            ],
            "refunded": [
                "OrderCreated",
                "StockReserved",
                "PaymentSucceeded",
                "OrderApproved",
                "OrderCancelled",
                "PaymentRefunded",
            ],
        },
        products=[
            {"sku": "A", "on_hand": 7, "reserved": 0, "sold": 3, "restocked": 2, "received": 8}
        ],
        reservations={
            "shipped": {"status": "sold", "lines": [{"sku": "A", "quantity": 1}]},
            "refunded": {"status": "restocked", "lines": [{"sku": "A", "quantity": 2}]},
        },
        shipments={"shipped": "scheduled", "refunded": "cancelled"},
        notifications=[
            ("shipped", "order_approved"),
            ("shipped", "order_shipped"),
            ("refunded", "order_approved"),
            ("refunded", "order_cancelled"),
        ],
        charges=[Charge("ch1", "shipped", 100), Charge("ch2", "refunded", 200)],
        refunds=[Refund("re1", "ch2", 200)],
        pending_outbox={"orders": 0},
    )


def test_a_settled_system_has_no_violations() -> None:
    assert check(healthy()) == []


def broken(change) -> set[str]:  # type: ignore[no-untyped-def]
    snap = copy.deepcopy(healthy())
    change(snap)
    return {v.rule for v in check(snap)}


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda s: s.orders.update(shipped="PENDING"), "order-terminal"),
        (lambda s: s.timelines["refunded"].remove("OrderCancelled"), "order-history"),
        (lambda s: s.products[0].update(on_hand=8), "stock-conserved"),
        (lambda s: s.reservations["refunded"].update(status="sold"), "stock-undone"),
        (lambda s: s.charges.append(Charge("ch3", "shipped", 100)), "charged-once"),
        (lambda s: s.refunds.clear(), "charge-refund"),
        (lambda s: s.refunds.append(Refund("re2", "ch2", 200)), "charge-refund"),
        (lambda s: s.refunds.append(Refund("re3", "ch1", 100)), "charge-refund"),
        (lambda s: s.shipments.update(refunded="scheduled"), "no-live-shipment"),
        (lambda s: s.shipments.update(refunded="cancelling"), "shipment-booking"),
        (lambda s: s.shipments.update(refunded="booking"), "shipment-booking"),
        (lambda s: s.shipments.update(shipped="booking"), "shipment"),
        (lambda s: s.notifications.append(("shipped", "order_shipped")), "notified-once"),
        (lambda s: s.notifications.remove(("refunded", "order_cancelled")), "notified"),
        # Claimed, its e-mail still due (or failed on every channel): not told yet.
        (lambda s: s.unannounced.append(("shipped", "order_shipped")), "notified"),
        (lambda s: s.pending_outbox.update(stock=3), "outbox-drained"),
    ],
)
def test_each_rule_catches_its_violation(change, rule) -> None:  # type: ignore[no-untyped-def]
    assert rule in broken(change)
