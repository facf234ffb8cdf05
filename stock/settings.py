"""Settings of the stock service."""

from __future__ import annotations

from pydantic import Field, PositiveInt, SecretStr
from pydantic_settings import SettingsConfigDict

from saga_runtime import ServiceSettings


class StockSettings(ServiceSettings):
    """``STOCK_HOST``/``STOCK_PORT``: where the API listens (127.0.0.1:8001).

    ``STOCK_ADMIN_TOKEN``: when set (and not empty), ``PUT /stock/{sku}`` requires the same
    value in its ``X-Admin-Token`` header; when unset, the admin API is open (local use).
    """

    model_config = SettingsConfigDict(env_prefix="STOCK_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    admin_token: SecretStr | None = None
    # One consumer (see orders' settings); more would wait on each other's product locks.
    consumers: PositiveInt = 1
