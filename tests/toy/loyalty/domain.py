"""Loyalty's decisions: pure state and events, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.orders import OrderShipped
from saga_runtime import Event
from tests.toy.loyalty.events import PointsAwarded


@dataclass(frozen=True)
class Award:
    """The points one order earned."""

    order_id: str
    email: str
    points: int


def award(
    current: Award | None, shipped: OrderShipped, *, points: int
) -> tuple[Award | None, list[Event]]:
    """Points for a shipped order, once per order: the same fact again changes nothing."""
    if current is not None:
        return None, []
    new = Award(order_id=shipped.order_id, email=shipped.email, points=points)
    return new, [PointsAwarded(order_id=new.order_id, email=new.email, points=new.points)]
