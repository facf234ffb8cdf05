"""Composition root of the loyalty service (consumer only: it has no API)."""

from __future__ import annotations

from saga_runtime import Composition
from tests.toy.loyalty.settings import LoyaltySettings

Settings = LoyaltySettings


def compose(settings: LoyaltySettings) -> Composition:
    return Composition(dependencies={"points_per_order": settings.points_per_order})
