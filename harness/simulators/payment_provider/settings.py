"""Settings of the payment provider simulator."""

from __future__ import annotations

from pydantic import AliasChoices, Field, NonNegativeFloat, PositiveFloat, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProviderSettings(BaseSettings):
    """``PROVIDER_DATABASE_URL`` (else ``DATABASE_URL``): where its ledger lives.

    ``PROVIDER_API_KEY``: the merchant's key, required in ``Authorization: Bearer`` on every
    call but the health checks; without one the simulator refuses to start.
    """

    model_config = SettingsConfigDict(env_prefix="PROVIDER_", extra="ignore")

    api_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8010, ge=0, le=65535)
    slow_seconds: NonNegativeFloat = 2.0
    # Every charge, void and refund waits this long first (a real network's latency).
    latency_seconds: NonNegativeFloat = 0.0
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:55432/saga",
        validation_alias=AliasChoices("PROVIDER_DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    # Slow charges hold a connection while they "think"; leave room for them.
    pool_max_size: PositiveInt = 20
    pool_timeout: PositiveFloat = 10.0
