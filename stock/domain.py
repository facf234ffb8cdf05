"""Stock: reserve an order's lines all or nothing, sell them on approval, give them back on
cancellation.

Per SKU the units are conserved: ``received = on_hand + reserved + sold - restocked``, where
``on_hand`` is what can still be reserved and ``received`` counts every unit ever added.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from contracts.orders import OrderApproved, OrderCancelled, OrderCreated, OrderLine
from contracts.stock import (
    PricedLine,
    StockLine,
    StockReleased,
    StockReservationFailed,
    StockReserved,
    StockRestocked,
    StockSold,
)
from saga_runtime import Event

Status = Literal["reserved", "sold", "released", "restocked", "failed", "voided"]

# What a SKU may look like. Anything else is unknown without asking the database, so a
# hostile or broken order (a NUL byte, a megabyte of text) fails cleanly instead of failing SQL.
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SKU = re.compile(SKU_PATTERN)
# Bounds that keep every counter inside PostgreSQL's integer columns.
MAX_UNITS = 1_000_000_000
MAX_PRICE_CENTS = 100_000_000_000


class StockError(Exception):
    """Root error of the stock service's domain."""


class ProductIncomplete(StockError):
    """A new product needs the fields an existing one may omit."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"a new product needs {', '.join(missing)}")
        self.missing = missing


class MissingProduct(StockError):
    """A reservation names a product that is gone: the data is corrupt, not the message."""


def is_valid_sku(sku: str) -> bool:
    return _SKU.fullmatch(sku) is not None


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    on_hand: int
    reserved: int = 0
    sold: int = 0
    restocked: int = 0
    received: int = 0

    @property
    def conserved(self) -> bool:
        return self.received == self.on_hand + self.reserved + self.sold - self.restocked


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: Status
    lines: tuple[PricedLine, ...] = ()
    total_cents: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    """What one event changes: the reservation, the products touched, the events to emit."""

    reservation: Reservation | None
    products: tuple[Product, ...] = ()
    events: tuple[Event, ...] = ()


def requested(lines: Iterable[OrderLine]) -> dict[str, int]:
    """Quantities per SKU, in the order SKUs first appear; repeated SKUs are summed."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return totals


def skus_to_lock(created: OrderCreated) -> list[str]:
    """The products a reservation may change (only well-formed SKUs ever reach SQL)."""
    return sorted(sku for sku in requested(created.lines) if is_valid_sku(sku))


def held_skus(reservation: Reservation | None) -> list[str]:
    """The products a later sale or give-back may change: those the order still holds."""
    if reservation is None or reservation.status not in ("reserved", "sold"):
        return []
    return sorted(line.sku for line in reservation.lines)


def _listed(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def reserve(
    current: Reservation | None, created: OrderCreated, products: Mapping[str, Product]
) -> Decision:
    """Reserve every line or none; an order already decided (or voided) reserves nothing."""
    if current is not None:
        return Decision(current)
    order_id = created.order_id
    wanted = requested(created.lines)
    unknown = [sku for sku in wanted if sku not in products]
    if unknown:
        # repr() keeps control characters out of the stored reason.
        reason = f"unknown SKU {_listed([repr(sku) for sku in unknown])}"
        return _failed(order_id, "unknown_sku", reason)
    short = [
        f"{sku}: requested {quantity}, available {products[sku].on_hand}"
        for sku, quantity in wanted.items()
        if quantity > products[sku].on_hand
    ]
    if short:
        return _failed(order_id, "out_of_stock", f"not enough stock for {_listed(short)}")
    lines = tuple(
        PricedLine(sku=sku, quantity=quantity, unit_price_cents=products[sku].price_cents)
        for sku, quantity in wanted.items()
    )
    total = sum(line.quantity * line.unit_price_cents for line in lines)
    changed = tuple(
        replace(
            products[line.sku],
            on_hand=products[line.sku].on_hand - line.quantity,
            reserved=products[line.sku].reserved + line.quantity,
        )
        for line in lines
    )
    reservation = Reservation(order_id, "reserved", lines, total_cents=total)
    return Decision(
        reservation,
        changed,
        (StockReserved(order_id=order_id, lines=list(lines), total_cents=total),),
    )


def _failed(order_id: str, code: Literal["out_of_stock", "unknown_sku"], reason: str) -> Decision:
    return Decision(
        Reservation(order_id, "failed", reason=reason),
        events=(StockReservationFailed(order_id=order_id, reason_code=code, reason=reason),),
    )


def sell(
    current: Reservation | None, approved: OrderApproved, products: Mapping[str, Product]
) -> Decision:
    """The reserved units leave the warehouse; anything but a live reservation is left alone."""
    if current is None or current.status != "reserved":
        return Decision(current)
    changed = tuple(
        replace(p, reserved=p.reserved - line.quantity, sold=p.sold + line.quantity)
        for line, p in _with_products(current, products)
    )
    return Decision(
        replace(current, status="sold"),
        changed,
        (StockSold(order_id=current.order_id, lines=_stock_lines(current)),),
    )


def cancel(
    current: Reservation | None, cancelled: OrderCancelled, products: Mapping[str, Product]
) -> Decision:
    """Give back what the order holds, exactly once; remember a cancellation that came first."""
    if current is None:
        # A late or replayed OrderCreated must then reserve nothing.
        return Decision(Reservation(cancelled.order_id, "voided", reason=cancelled.reason))
    if current.status == "reserved":
        changed = tuple(
            replace(p, reserved=p.reserved - line.quantity, on_hand=p.on_hand + line.quantity)
            for line, p in _with_products(current, products)
        )
        return Decision(
            replace(current, status="released", reason=cancelled.reason),
            changed,
            (StockReleased(order_id=current.order_id, lines=_stock_lines(current)),),
        )
    if current.status == "sold":
        changed = tuple(
            replace(p, on_hand=p.on_hand + line.quantity, restocked=p.restocked + line.quantity)
            for line, p in _with_products(current, products)
        )
        return Decision(
            replace(current, status="restocked", reason=cancelled.reason),
            changed,
            (StockRestocked(order_id=current.order_id, lines=_stock_lines(current)),),
        )
    return Decision(current)


def put_product(
    current: Product | None,
    *,
    sku: str,
    on_hand: int,
    name: str | None = None,
    price_cents: int | None = None,
) -> Product:
    """An operator's count: ``on_hand`` is set, and ``received`` moves by the same delta so the
    units stay conserved (a lower count is a write-off, a higher one a delivery)."""
    if current is None:
        missing = [
            field
            for field, value in (("name", name), ("price_cents", price_cents))
            if value is None
        ]
        if missing:
            raise ProductIncomplete(missing)
        assert name is not None and price_cents is not None
        return Product(sku, name, price_cents, on_hand=on_hand, received=on_hand)
    return replace(
        current,
        name=current.name if name is None else name,
        price_cents=current.price_cents if price_cents is None else price_cents,
        on_hand=on_hand,
        received=current.received + on_hand - current.on_hand,
    )


def _with_products(
    reservation: Reservation, products: Mapping[str, Product]
) -> list[tuple[PricedLine, Product]]:
    missing = [line.sku for line in reservation.lines if line.sku not in products]
    if missing:
        raise MissingProduct(
            f"reservation of order {reservation.order_id} names missing products {missing}"
        )
    return [(line, products[line.sku]) for line in reservation.lines]


def _stock_lines(reservation: Reservation) -> list[StockLine]:
    return [StockLine(sku=line.sku, quantity=line.quantity) for line in reservation.lines]
