"""Settings of the payments service."""

from __future__ import annotations

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt
from pydantic_settings import SettingsConfigDict

from saga_runtime import ServiceSettings


class PaymentsSettings(ServiceSettings):
    """``PAYMENTS_PROVIDER_URL``: the payment provider; the timeouts bound every call to it.

    A handler asks the provider up to ``PAYMENTS_PROVIDER_ATTEMPTS`` times, waiting
    ``PAYMENTS_PROVIDER_BACKOFF`` seconds (doubling) in between, inside its
    transaction: keep attempts x timeout well under a minute.
    """

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    # No HTTP API: /healthz and /readyz on a port of their own (0: none).
    health_port: int = Field(default=8021, ge=0, le=65535)

    provider_url: str = "http://127.0.0.1:8010"
    provider_timeout: PositiveFloat = 5.0
    provider_connect_timeout: PositiveFloat = 2.0
    provider_attempts: PositiveInt = 3
    provider_backoff: NonNegativeFloat = 0.5
    # Its handler waits on the provider: three consumers keep working meanwhile.
    consumers: PositiveInt = 3
