"""Settings of the shipments service."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import Field, PositiveInt, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from saga_runtime import EffectSettings, ServiceSettings
from shipments.domain import BOOKING_DEADLINE


class ShipmentsEffectSettings(EffectSettings):
    """The executor's settings (``EFFECTS_*``), with more bookings in flight by default."""

    # A booking spends its time waiting for the carrier (2 s under ``./dev up``), on a
    # thread of its own: 256 in flight book 200 approvals at once, and keep up with
    # over 100 orders/s at 2 s each. ``EFFECTS_CONCURRENCY`` still sets it.
    concurrency: PositiveInt = 256


class ShipmentsSettings(ServiceSettings):
    """``SHIPMENTS_COUNTRIES=US,CA``: where the carrier delivers; elsewhere shipments fail."""

    model_config = SettingsConfigDict(env_prefix="SHIPMENTS_", extra="ignore")

    # No HTTP API: /healthz and /readyz on a port of their own (0: none).
    health_port: int = Field(default=8022, ge=0, le=65535)

    carrier: str = "Parcelo"
    countries: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["US", "CA", "GB", "IE", "DE", "FR", "NL", "BE", "ES", "IT"]
    )
    refused_postal_codes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["00000"])
    delivery_days: int = Field(default=3, ge=0)
    # How long the (simulated) carrier takes to book a shipment: the window in
    # which a customer can still cancel an approved order. Bookings are effects, made
    # many at once outside any transaction: this adds latency, not a throughput cap.
    booking_seconds: float = Field(default=0.0, ge=0, le=60)
    # Transient carrier failures are retried until this long after the approval; then
    # the booking fails for good (ShipmentFailed, and orders cancels and refunds).
    booking_deadline: timedelta = Field(default=BOOKING_DEADLINE, gt=timedelta(0))
    effects: ShipmentsEffectSettings = Field(default_factory=ShipmentsEffectSettings)

    @field_validator("countries", "refused_postal_codes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value
