"""Settings of the stock service."""

from __future__ import annotations

from pydantic import Field, PositiveInt
from pydantic_settings import SettingsConfigDict

from saga_runtime import AuthSettings, ServiceSettings


class StockSettings(ServiceSettings):
    """``STOCK_HOST``/``STOCK_PORT``: where the API listens (127.0.0.1:8001).

    ``PUT /stock/{sku}`` and ``GET /reservations/{order_id}`` need an operator's token,
    verified with the ``AUTH_*`` settings; without token keys the service does not start.
    """

    model_config = SettingsConfigDict(env_prefix="STOCK_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    # One consumer (see orders' settings); more would wait on each other's product locks.
    consumers: PositiveInt = 1
    auth: AuthSettings = Field(default_factory=AuthSettings)
