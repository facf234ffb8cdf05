"""Settings of the shipments service."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from saga_runtime import ServiceSettings


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
    # which a customer can still cancel an approved order.
    booking_seconds: float = Field(default=0.0, ge=0, le=60)

    @field_validator("countries", "refused_postal_codes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value
