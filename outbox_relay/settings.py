"""Settings of the relay process."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from saga_runtime import DatabaseSettings, KafkaSettings, LogSettings, RelaySettings
from saga_runtime.kafka_access import relay_principal
from saga_system import SYSTEM


class RelayProcessSettings(BaseSettings):
    """``RELAY_OUTBOXES`` picks which services' outboxes this process relays (default: all)."""

    model_config = SettingsConfigDict(
        env_prefix="RELAY_", extra="ignore", hide_input_in_errors=True
    )

    outboxes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: SYSTEM.outboxes())
    name: str = "relay"
    # /healthz and /readyz (``RELAY_HEALTH_HOST``, ``RELAY_HEALTH_PORT``). Off (0) unless
    # set: an active relay and its standby often share a host, and one default port would
    # make the second one fail. ``./dev up`` gives them 8030 and 8031, compose 8030 each.
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=0, ge=0, le=65535)
    # Prometheus's /metrics on a port of its own (``RELAY_METRICS_PORT``, on ``health_host``);
    # 0: none, for the same reason as the health port.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("METRICS_ENABLED", "metrics_enabled")
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    # On a secured broker each outbox is published as a principal of its own,
    # ``relay-<outbox>``, the only one that may write the outbox's events topic:
    # ``RELAY_KAFKA_PASSWORDS='{"orders":"...","stock":"..."}'``. An outbox without an
    # entry is published as ``KAFKA_SASL_USERNAME``.
    kafka_passwords: dict[str, SecretStr] = Field(default_factory=dict)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    log: LogSettings = Field(default_factory=LogSettings)

    def kafka_for(self, outbox: str) -> KafkaSettings:
        """The broker settings, logged in as the principal that publishes ``outbox``."""
        password = self.kafka_passwords.get(outbox)
        if password is None:
            return self.kafka
        return self.kafka.as_principal(relay_principal(outbox), password)

    @field_validator("outboxes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        # RELAY_OUTBOXES=orders,stock reads better than JSON in a shell.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("outboxes")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        # A misspelt outbox would be polled for ever and publish nothing.
        unknown = [name for name in value if name not in SYSTEM.outboxes()]
        if unknown:
            raise ValueError(
                f"unknown outbox {', '.join(unknown)} (the system's outboxes: "
                f"{', '.join(SYSTEM.outboxes())})"
            )
        if not value:
            raise ValueError("no outbox to relay")
        return value
