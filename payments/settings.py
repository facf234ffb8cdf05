"""Settings of the payments service."""

from __future__ import annotations

from typing import Self

from pydantic import Field, PositiveFloat, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from saga_runtime import ServiceSettings


class PaymentsSettings(ServiceSettings):
    """``PAYMENTS_PROVIDER_URL``: the payment provider; the timeouts bound every call to it.

    Calls are effects, made by the service's executor out of any transaction and
    retried while the provider is unavailable, waiting ``PAYMENTS_RETRY_INITIAL``
    seconds, doubling up to a cap, until a deadline. A charge gives up after
    ``PAYMENTS_CHARGE_DEADLINE`` (the payment fails, so the order is cancelled
    rather than left waiting: keep it under orders' pending timeout). A void or
    refund (an undo) is retried for ``PAYMENTS_UNDO_DEADLINE``, then waits, as a
    failed effect, for an operator: a refund is never forgotten.
    """

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore")

    # No HTTP API: /healthz and /readyz on a port of their own (0: none).
    health_port: int = Field(default=8021, ge=0, le=65535)

    provider_url: str = "http://127.0.0.1:8010"
    # The merchant's key at the provider (``PAYMENTS_PROVIDER_API_KEY``), sent as a bearer
    # token on every call.
    provider_api_key: SecretStr | None = None
    provider_timeout: PositiveFloat = 5.0
    provider_connect_timeout: PositiveFloat = 2.0
    # Seconds, from the request of the effect.
    charge_deadline: PositiveFloat = 30.0
    undo_deadline: PositiveFloat = 24 * 3600.0
    # Seconds between attempts: the first wait, and the caps it doubles up to.
    retry_initial: PositiveFloat = 0.5
    charge_retry_max: PositiveFloat = 5.0
    undo_retry_max: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _caps_above_the_first_wait(self) -> Self:
        for name in ("charge_retry_max", "undo_retry_max"):
            if getattr(self, name) < self.retry_initial:
                raise ValueError(f"PAYMENTS_{name.upper()} is below PAYMENTS_RETRY_INITIAL")
        return self
