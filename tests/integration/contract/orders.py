"""Orders' part of the handler contract: an order placed through its API command, then what
stock, payments, shipments and notifications say about it."""

from __future__ import annotations

from contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from contracts.shipments import ShipmentCancelled, ShipmentFailed, ShipmentScheduled
from contracts.stock import (
    StockReleased,
    StockReservationFailed,
    StockReserved,
    StockRestocked,
    StockSold,
)
from orders.handlers import cancel_order, place_order
from orders.repository import OrderRepository
from saga_runtime.testing import HandlerRunner
from tests.integration.contract.scenario import (
    ADDRESS,
    CARD,
    CARRIER,
    EMAIL,
    ETA,
    LINES,
    PRICED,
    TOTAL,
    UNITS,
    Contract,
    Dependencies,
    Saga,
    Scenario,
    State,
    Step,
    emitted,
    notified,
    plain,
    unordered,
)


def place(runner: HandlerRunner) -> Saga:
    order, _created = runner.run(
        lambda uow: place_order(
            uow,
            customer_id="customer-1",
            email=EMAIL,
            lines=LINES,
            card_token=CARD,
            shipping_address=ADDRESS,
            idempotency_key=None,
            fingerprint=None,
        )
    )
    return Saga(order_id=order.id, correlation_id=order.correlation_id)


def reserved_event(saga: Saga) -> StockReserved:
    return StockReserved(order_id=saga.order_id, lines=PRICED, total_cents=TOTAL)


def units_event(
    saga: Saga, event: type[StockReleased | StockSold | StockRestocked]
) -> StockReleased | StockSold | StockRestocked:
    return event(order_id=saga.order_id, lines=UNITS)


def paid_event(saga: Saga) -> PaymentSucceeded:
    return PaymentSucceeded(order_id=saga.order_id, amount_cents=TOTAL, charge_id="ch_1")


def refunded_event(saga: Saga) -> PaymentRefunded:
    return PaymentRefunded(
        order_id=saga.order_id, amount_cents=TOTAL, charge_id="ch_1", refund_id="re_1"
    )


def scheduled_event(saga: Saga) -> ShipmentScheduled:
    return ShipmentScheduled(
        order_id=saga.order_id, shipment_id="shp_1", carrier=CARRIER, estimated_delivery=ETA
    )


def shipped_order(saga: Saga) -> list[Step]:
    reserved = Step(reserved_event(saga))
    paid = Step(paid_event(saga))  # orders approves: OrderApproved
    scheduled = Step(scheduled_event(saga), after=(paid,))  # orders ships: OrderShipped
    sold = Step(units_event(saga, StockSold), after=(paid,))
    told = Step(notified(saga, "order_shipped"), after=(scheduled,))
    return [reserved, paid, scheduled, sold, told]


def payment_declined(saga: Saga) -> list[Step]:
    failed = Step(  # orders cancels: OrderCancelled
        PaymentFailed(order_id=saga.order_id, reason_code="payment_declined", reason="no")
    )
    released = Step(units_event(saga, StockReleased), after=(failed,))
    told = Step(notified(saga, "order_cancelled"), after=(failed,))
    return [Step(reserved_event(saga)), failed, released, told]


def out_of_stock(saga: Saga) -> list[Step]:
    failed = Step(  # orders cancels: OrderCancelled
        StockReservationFailed(
            order_id=saga.order_id, reason_code="out_of_stock", reason="not enough stock for SKU-A"
        )
    )
    return [failed, Step(notified(saga, "order_cancelled"), after=(failed,))]


def shipment_failed(saga: Saga) -> list[Step]:
    paid = Step(paid_event(saga))
    failed = Step(  # orders cancels the approved order: OrderCancelled
        ShipmentFailed(
            order_id=saga.order_id, reason_code="unserviceable_address", reason="no delivery"
        ),
        after=(paid,),
    )
    return [
        Step(reserved_event(saga)),
        paid,
        failed,
        Step(refunded_event(saga), after=(failed,)),
        Step(units_event(saga, StockRestocked), after=(failed,)),
    ]


def approve_then_cancel(runner: HandlerRunner, saga: Saga) -> None:
    """The order was approved, then the customer cancelled it before it shipped."""
    runner.deliver(saga.envelope(reserved_event(saga)))
    runner.deliver(saga.envelope(paid_event(saga)))
    runner.run(lambda uow: cancel_order(uow, saga.order_id))


def late_shipment(saga: Saga) -> list[Step]:
    """Shipments scheduled the order meanwhile: it calls that off, payments refunds."""
    # Their causes (OrderApproved, OrderCancelled) are in the past: any order goes.
    return [
        Step(scheduled_event(saga)),
        Step(ShipmentCancelled(order_id=saga.order_id, shipment_id="shp_1")),
        Step(refunded_event(saga)),
    ]


def state(runner: HandlerRunner, saga: Saga, _dependencies: Dependencies) -> State:
    repository = OrderRepository(runner.conn)
    return {
        "order": plain(repository.get(saga.order_id)),
        # As a set: entries that occurred in the same microsecond may come either way.
        "timeline": sorted((t.event_type, t.event_id) for t in repository.timeline(saga.order_id)),
        "emitted": emitted(runner),
    }


def settled(state: State) -> State:
    """All of it but the order's creation time (a new order each play) and the ids of the
    timeline's entries (what orders emits gets new ids each play)."""
    order = {k: v for k, v in state["order"].items() if k != "created_at"}
    return {
        "order": order,
        "timeline": unordered([event_type for event_type, _id in state["timeline"]]),
        "emitted": state["emitted"],
    }


CONTRACT = Contract(
    service="orders",
    start=place,
    state=state,
    settled=settled,
    scenarios=(
        Scenario("shipped", shipped_order),
        Scenario("payment-declined", payment_declined),
        Scenario("out-of-stock", out_of_stock),
        Scenario("shipment-failed", shipment_failed),
        Scenario("cancelled-while-shipping", late_shipment, prepare=approve_then_cancel),
    ),
)
