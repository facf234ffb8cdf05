"""The stock service's public contract: the events it emits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from saga_runtime import Event


class StockLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    sku: str
    quantity: int = Field(gt=0)


class PricedLine(StockLine):
    unit_price_cents: int = Field(ge=0)


class StockReserved(Event):
    """Every line of the order is reserved; Stock owns the prices."""

    event_type = "StockReserved"

    order_id: str
    lines: list[PricedLine]
    total_cents: int


class StockReservationFailed(Event):
    """Nothing was reserved (reservations are all or nothing)."""

    event_type = "StockReservationFailed"

    order_id: str
    reason_code: Literal["out_of_stock", "unknown_sku"]
    reason: str


class StockReleased(Event):
    """A reservation was given back after a cancellation."""

    event_type = "StockReleased"

    order_id: str
    lines: list[StockLine]


class StockSold(Event):
    """A reservation became a sale: the units left the warehouse's stock."""

    event_type = "StockSold"

    order_id: str
    lines: list[StockLine]


class StockRestocked(Event):
    """Sold units were put back after the order was cancelled."""

    event_type = "StockRestocked"

    order_id: str
    lines: list[StockLine]
