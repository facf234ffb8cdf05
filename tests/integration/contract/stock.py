"""Stock's part of the handler contract: an order's life as orders tells it, over two products."""

from __future__ import annotations

from typing import Any

from contracts.orders import OrderApproved, OrderCreated, OrderLine
from saga_runtime.testing import HandlerRunner
from stock.domain import Product
from stock.repository import StockRepository
from tests.integration.contract.scenario import (
    ADDRESS,
    CARD,
    EMAIL,
    LINES,
    PRICES,
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

ON_HAND = 5


def start(runner: HandlerRunner) -> Saga:
    def add_products(uow: Any) -> None:
        repository = StockRepository(uow.conn)
        for sku, price in PRICES.items():
            repository.insert_product(
                Product(sku, f"Product {sku}", price, on_hand=ON_HAND, received=ON_HAND)
            )

    runner.run(add_products)
    return Saga.new()


def created(saga: Saga, lines: list[OrderLine] = LINES) -> OrderCreated:
    return OrderCreated(
        order_id=saga.order_id,
        customer_id="customer-1",
        email=EMAIL,
        lines=lines,
        card_token=CARD,
        shipping_address=ADDRESS,
    )


def approved(saga: Saga, reserved: Step) -> Step:
    """Payments charges the price stock reserved at: OrderApproved follows the reservation."""
    event = OrderApproved(
        order_id=saga.order_id,
        customer_id="customer-1",
        email=EMAIL,
        lines=LINES,
        total_cents=TOTAL,
        shipping_address=ADDRESS,
    )
    return Step(event, after=(reserved,))


def sold(saga: Saga) -> list[Step]:
    reserved = Step(created(saga))
    return [reserved, approved(saga, reserved)]


def cancelled_after_sale(saga: Saga) -> list[Step]:
    """Shipments could not deliver: orders cancels the approved order."""
    reserved = Step(created(saga))
    why = cancelled(saga, "shipment_failed", "no delivery", "APPROVED")
    return [reserved, approved(saga, reserved), Step(why)]


def cancelled_by_customer(saga: Saga) -> list[Step]:
    why = cancelled(saga, "customer_request", "cancelled by the customer", "PENDING")
    return [Step(created(saga)), Step(why)]


def out_of_stock(saga: Saga) -> list[Step]:
    """StockReservationFailed, and orders cancels."""
    refused = Step(created(saga, [OrderLine(sku="SKU-A", quantity=ON_HAND + 1)]))
    why = cancelled(saga, "out_of_stock", "not enough stock for SKU-A", "PENDING")
    return [refused, Step(why, after=(refused,))]


def state(runner: HandlerRunner, saga: Saga, _dependencies: Dependencies) -> State:
    repository = StockRepository(runner.conn)
    return {
        "reservation": plain(repository.reservation(saga.order_id)),
        "products": [plain(repository.product(sku)) for sku in PRICES],
        "emitted": emitted(runner),
    }


def settled(state: State) -> State:
    """The units of every product: on hand, held for orders, gone (sold less restocked) and
    received; and whether the order still has units (reserved or sold). Left out: how the
    units came back. A cancellation before the sale releases them, one after it restocks
    them, one before the reservation means none were taken: the reservation's status, the
    sold and restocked counters and the events that say so differ, the units do not."""
    reservation = state["reservation"]
    return {
        "products": [
            {
                "sku": p["sku"],
                "on_hand": p["on_hand"],
                "reserved": p["reserved"],
                "gone": p["sold"] - p["restocked"],
                "received": p["received"],
            }
            for p in state["products"]
        ],
        "has_units": reservation is not None and reservation["status"] in ("reserved", "sold"),
    }


CONTRACT = Contract(
    service="stock",
    start=start,
    state=state,
    settled=settled,
    scenarios=(
        Scenario("sold", sold),
        Scenario("cancelled-after-sale", cancelled_after_sale),
        Scenario("cancelled-by-customer", cancelled_by_customer),
        Scenario("out-of-stock", out_of_stock),
    ),
)
