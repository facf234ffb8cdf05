"""Stock under any interleaving and duplication of one order's events (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.orders import Address, OrderApproved, OrderCancelled, OrderCreated, OrderLine
from contracts.stock import (
    StockReleased,
    StockReservationFailed,
    StockReserved,
    StockRestocked,
    StockSold,
)
from saga_runtime import Event
from stock import domain
from stock.domain import Product, ProductIncomplete, Reservation

SKUS = ("A-1", "B-2", "C-3")
ADDRESS = Address(name="A", line1="1 Main St", city="NYC", postal_code="10001", country="US")


def created(lines: list[OrderLine], order_id: str = "o-1") -> OrderCreated:
    return OrderCreated(
        order_id=order_id,
        customer_id="c-1",
        email="a@example.com",
        lines=lines,
        card_token="tok_visa",
        shipping_address=ADDRESS,
    )


def approved(lines: list[OrderLine], order_id: str = "o-1") -> OrderApproved:
    return OrderApproved(
        order_id=order_id,
        customer_id="c-1",
        email="a@example.com",
        lines=lines,
        total_cents=0,
        shipping_address=ADDRESS,
    )


def cancelled(order_id: str = "o-1") -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        email="a@example.com",
        reason_code="customer_request",
        reason="changed mind",
        previous_status="PENDING",
    )


@dataclass
class Store:
    """The stock service's state for one order, as the handlers would keep it."""

    products: dict[str, Product]
    reservation: Reservation | None = None
    emitted: list[Event] = field(default_factory=list)

    def apply(self, event: OrderCreated | OrderApproved | OrderCancelled) -> domain.Decision:
        visible = {sku: p for sku, p in self.products.items() if domain.is_valid_sku(sku)}
        if isinstance(event, OrderCreated):
            decision = domain.reserve(self.reservation, event, visible)
        elif isinstance(event, OrderApproved):
            decision = domain.sell(self.reservation, event, visible)
        else:
            decision = domain.cancel(self.reservation, event, visible)
        self.reservation = decision.reservation
        for product in decision.products:
            self.products[product.sku] = product
        self.emitted += decision.events
        return decision

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.emitted if isinstance(e, kind)]


@st.composite
def products(draw: st.DrawFn) -> dict[str, Product]:
    """A catalogue with random counts, including units other orders hold or bought; now and
    then a product is missing from it."""
    missing = draw(st.sets(st.sampled_from(SKUS), max_size=1))
    catalogue = {}
    for sku in (s for s in SKUS if s not in missing):
        on_hand = draw(st.integers(0, 12))
        reserved, sold = draw(st.integers(0, 6)), draw(st.integers(0, 6))
        restocked = draw(st.integers(0, sold))
        price = draw(st.integers(0, 5_000))
        received = on_hand + reserved + sold - restocked
        catalogue[sku] = Product(sku, f"name {sku}", price, on_hand, reserved, sold, restocked,
                                 received)  # fmt: skip
    return catalogue


order_lines = st.lists(
    st.builds(
        OrderLine,
        sku=st.sampled_from([*SKUS, *SKUS, *SKUS, "UNKNOWN-9"]),
        quantity=st.integers(1, 3),
    ),
    min_size=1,
    max_size=4,
)
deliveries = st.lists(st.sampled_from(["created", "approved", "cancelled"]), min_size=1, max_size=9)


def assert_conserved(store: Store) -> None:
    for p in store.products.values():
        assert p.conserved, p
        assert min(p.on_hand, p.reserved, p.sold, p.restocked, p.received) >= 0, p
        assert p.restocked <= p.sold, p


@given(products(), order_lines, deliveries)
def test_any_interleaving_keeps_stock_conserved_and_compensates_once(
    catalogue: dict[str, Product], lines: list[OrderLine], names: list[str]
) -> None:
    store = Store(dict(catalogue))
    events = {"created": created(lines), "approved": approved(lines), "cancelled": cancelled()}
    for name in names:
        before = dict(store.products)
        decision = store.apply(events[name])
        assert_conserved(store)
        if any(isinstance(e, StockReservationFailed) for e in decision.events):
            assert store.products == before, "a failed reservation changes nothing"

    reserved, failed = store.of(StockReserved), store.of(StockReservationFailed)
    assert len(reserved) + len(failed) <= 1, "at most one reservation decision per order"
    assert len(store.of(StockSold)) <= len(reserved)
    assert len(store.of(StockReleased)) + len(store.of(StockRestocked)) <= 1
    assert len(store.of(StockRestocked)) <= len(store.of(StockSold))
    if names[0] == "cancelled" or "created" not in names:
        assert reserved == [], "nothing is reserved for an order cancelled before it arrived"

    if "cancelled" in names:
        # Nothing reserved or (net) sold remains for a cancelled order.
        assert store.reservation is not None
        assert store.reservation.status in ("released", "restocked", "failed", "voided")
        for sku, before in catalogue.items():
            after = store.products[sku]
            assert after.reserved == before.reserved
            assert after.sold - after.restocked == before.sold - before.restocked
            assert after.on_hand == before.on_hand


@given(products(), order_lines)
def test_a_reservation_is_all_or_nothing_and_priced_by_stock(
    catalogue: dict[str, Product], lines: list[OrderLine]
) -> None:
    store = Store(dict(catalogue))
    store.apply(created(lines))
    wanted = domain.requested(lines)
    enough = all(sku in catalogue and q <= catalogue[sku].on_hand for sku, q in wanted.items())
    if not enough:
        [failed] = store.emitted
        assert isinstance(failed, StockReservationFailed)
        assert store.products == catalogue
        assert store.reservation == Reservation("o-1", "failed", reason=failed.reason)
        return
    [event] = store.emitted
    assert isinstance(event, StockReserved)
    assert {line.sku: line.quantity for line in event.lines} == wanted
    assert event.total_cents == sum(q * catalogue[sku].price_cents for sku, q in wanted.items())
    for sku, product in store.products.items():
        q = wanted.get(sku, 0)
        assert product.on_hand == catalogue[sku].on_hand - q
        assert product.reserved == catalogue[sku].reserved + q


def one(sku: str, on_hand: int, price: int = 1_000) -> Product:
    return Product(sku, sku, price, on_hand=on_hand, received=on_hand)


def test_repeated_skus_are_summed_and_the_reason_names_sku_requested_and_available() -> None:
    store = Store({"A-1": one("A-1", 3)})
    lines = [OrderLine(sku="A-1", quantity=2), OrderLine(sku="A-1", quantity=2)]
    store.apply(created(lines))
    [failed] = store.emitted
    assert isinstance(failed, StockReservationFailed)
    assert failed.reason_code == "out_of_stock"
    assert "A-1" in failed.reason and "requested 4" in failed.reason
    assert "available 3" in failed.reason


def test_an_unknown_sku_fails_the_whole_order_even_when_the_rest_is_in_stock() -> None:
    store = Store({"A-1": one("A-1", 3), "B-2": one("B-2", 0)})
    lines = [OrderLine(sku="A-1", quantity=1), OrderLine(sku="NOPE", quantity=1)]
    store.apply(created(lines))
    [failed] = store.emitted
    assert isinstance(failed, StockReservationFailed)
    assert failed.reason_code == "unknown_sku" and "NOPE" in failed.reason
    assert store.products["A-1"].on_hand == 3


def test_a_malformed_sku_is_unknown_and_never_reaches_sql() -> None:
    event = created([OrderLine(sku="A-1\x00; DROP", quantity=1), OrderLine(sku="A-1", quantity=1)])
    assert domain.skus_to_lock(event) == ["A-1"]
    decision = domain.reserve(None, event, {"A-1": one("A-1", 5)})
    [failed] = decision.events
    assert isinstance(failed, StockReservationFailed) and failed.reason_code == "unknown_sku"
    assert "\x00" not in failed.reason


def test_reserve_sell_restock_moves_units_between_the_counters() -> None:
    store = Store({"A-1": one("A-1", 5, price=250)})
    lines = [OrderLine(sku="A-1", quantity=2)]
    store.apply(created(lines))
    assert store.products["A-1"] == Product("A-1", "A-1", 250, 3, 2, 0, 0, 5)
    store.apply(approved(lines))
    assert store.products["A-1"] == Product("A-1", "A-1", 250, 3, 0, 2, 0, 5)
    store.apply(cancelled())
    assert store.products["A-1"] == Product("A-1", "A-1", 250, 5, 0, 2, 2, 5)
    assert [type(e) for e in store.emitted] == [StockReserved, StockSold, StockRestocked]
    assert store.reservation is not None and store.reservation.status == "restocked"


def test_a_cancellation_before_the_order_voids_it() -> None:
    store = Store({"A-1": one("A-1", 5)})
    store.apply(cancelled())
    store.apply(created([OrderLine(sku="A-1", quantity=1)]))
    assert store.emitted == []
    assert store.reservation is not None and store.reservation.status == "voided"
    assert store.products["A-1"].on_hand == 5


def test_an_admin_count_moves_received_by_the_same_delta() -> None:
    held = Product("A-1", "Lamp", 100, on_hand=4, reserved=2, sold=3, restocked=1, received=8)
    lower = domain.put_product(held, sku="A-1", on_hand=1)
    assert (lower.on_hand, lower.received, lower.name, lower.price_cents) == (1, 5, "Lamp", 100)
    assert lower.conserved
    higher = domain.put_product(lower, sku="A-1", on_hand=10, name="Lamp 2", price_cents=7)
    assert (higher.received, higher.name, higher.price_cents) == (14, "Lamp 2", 7)
    assert higher.conserved


def test_a_new_product_needs_a_name_and_a_price() -> None:
    with pytest.raises(ProductIncomplete) as caught:
        domain.put_product(None, sku="N-1", on_hand=3)
    assert caught.value.missing == ["name", "price_cents"]
    created_product = domain.put_product(None, sku="N-1", on_hand=3, name="New", price_cents=5)
    assert created_product == Product("N-1", "New", 5, on_hand=3, received=3)


def test_the_seed_catalogue_is_conserved_and_has_valid_skus() -> None:
    from stock.catalogue import CATALOGUE

    assert 5 <= len(CATALOGUE) <= 8
    assert len({p.sku for p in CATALOGUE}) == len(CATALOGUE)
    for product in CATALOGUE:
        assert domain.is_valid_sku(product.sku) and product.conserved and product.on_hand > 0
