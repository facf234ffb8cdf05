"""Settings of the loyalty service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from saga_runtime import ServiceSettings


class LoyaltySettings(ServiceSettings):
    """``LOYALTY_POINTS_PER_ORDER``: what one shipped order earns."""

    model_config = SettingsConfigDict(env_prefix="LOYALTY_", extra="ignore")

    points_per_order: int = Field(default=10, gt=0)
