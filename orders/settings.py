"""Settings of the orders service."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AliasChoices, Field, PositiveFloat, PositiveInt
from pydantic_settings import SettingsConfigDict

from saga_runtime import AuthSettings, ServiceSettings


class OrdersSettings(ServiceSettings):
    """``ORDERS_PORT``, ``ORDERS_PENDING_TIMEOUT`` (seconds), ..."""

    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    pending_timeout_seconds: PositiveFloat = Field(
        default=60.0, validation_alias=AliasChoices("ORDERS_PENDING_TIMEOUT", "pending_timeout")
    )
    deadline_check_interval: PositiveFloat = 2.0
    # An order not final this long after it was placed counts as stuck (``saga_stuck_sagas``).
    stuck_after_seconds: PositiveFloat = Field(
        default=300.0, validation_alias=AliasChoices("ORDERS_STUCK_AFTER", "stuck_after")
    )
    # One consumer: its batches read and write per batch, so a second thread only splits
    # them (measured: 88 -> 77 ms of CPU per saga with one for orders and stock).
    consumers: PositiveInt = 1
    # Who may call the API: the token keys, issuer and audience (``AUTH_*``).
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @property
    def pending_timeout(self) -> timedelta:
        return timedelta(seconds=self.pending_timeout_seconds)
