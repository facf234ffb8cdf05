"""Settings shared by every process, read from the environment (pydantic-settings)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import AliasChoices, Field, NonNegativeFloat, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "ConsumerSettings",
    "DatabaseSettings",
    "KafkaSettings",
    "LogSettings",
    "RelaySettings",
    "ServiceSettings",
]


class KafkaSettings(BaseSettings):
    """Where the broker is and how topics are named.

    ``client_config`` passes extra librdkafka properties through unchanged
    (security settings, for example), as JSON:
    ``KAFKA_CLIENT_CONFIG='{"security.protocol":"SSL"}'``.
    """

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:19092"
    topic_prefix: str = ""
    topic_partitions: PositiveInt = 3
    client_config: dict[str, str] = Field(default_factory=dict)


class DatabaseSettings(BaseSettings):
    """The PostgreSQL server; each service works in its own schema under its own role."""

    model_config = SettingsConfigDict(extra="ignore")

    url: str = Field(
        default="postgresql://postgres@127.0.0.1:55432/saga",
        validation_alias=AliasChoices("DATABASE_URL", "url"),
    )
    pool_min_size: int = Field(
        default=1, ge=0, validation_alias=AliasChoices("DATABASE_POOL_MIN_SIZE", "pool_min_size")
    )
    pool_max_size: PositiveInt = Field(
        default=4, validation_alias=AliasChoices("DATABASE_POOL_MAX_SIZE", "pool_max_size")
    )
    connect_timeout: PositiveFloat = Field(
        default=5.0, validation_alias=AliasChoices("DATABASE_CONNECT_TIMEOUT", "connect_timeout")
    )


class ConsumerSettings(BaseSettings):
    """How the consumer runner retries and when it gives up on a message."""

    model_config = SettingsConfigDict(env_prefix="CONSUMER_", extra="ignore")

    max_attempts: PositiveInt = 5
    # Messages already fetched that one transaction applies together (1: one each).
    batch_size: PositiveInt = 100
    # ...and for no longer than this: the events emitted by a batch's first message
    # wait for the batch to commit (a handler that sends mail takes milliseconds).
    batch_max_seconds: NonNegativeFloat = 0.05
    backoff_initial: PositiveFloat = 0.2
    backoff_max: PositiveFloat = 5.0
    poll_timeout: PositiveFloat = 0.5
    session_timeout_ms: PositiveInt = 10_000
    # A consumer out of its group, or not fetching a partition it holds, for this
    # long is replaced by a new one (a librdkafka stall after a broker restart).
    stall_seconds: PositiveFloat = 60.0
    # /readyz stays ready through a consumer problem shorter than this (a
    # rebalance takes seconds); keep it under stall_seconds.
    ready_grace: NonNegativeFloat = 30.0


class RelaySettings(BaseSettings):
    """How the outbox relay batches, waits, elects its leader and purges."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    # Rows per select-produce-mark round: 2000 drains a backlog ~25% faster than 500.
    batch_size: PositiveInt = 2000
    poll_interval: PositiveFloat = 1.0
    lock_retry_interval: PositiveFloat = 1.0
    retention: timedelta = timedelta(days=7)
    purge_interval: timedelta = timedelta(minutes=10)
    lag_report_interval: PositiveFloat = 5.0
    unknown_topic_grace: PositiveFloat = 30.0
    backoff_initial: PositiveFloat = 0.2
    backoff_max: PositiveFloat = 5.0


class LogSettings(BaseSettings):
    """JSON lines by default; ``LOG_FORMAT=console`` for people."""

    model_config = SettingsConfigDict(env_prefix="LOG_", extra="ignore")

    format: Literal["json", "console"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ServiceSettings(BaseSettings):
    """What every service reads besides its own settings: broker, database, consumer, logs.

    A service's settings class subclasses this and sets its own ``env_prefix``;
    the nested groups keep their own variables (``KAFKA_*``, ``DATABASE_URL``...).
    """

    model_config = SettingsConfigDict(extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    # Consumers of the service's group in this process, each on a thread of its own
    # (``<SERVICE>_CONSUMERS``): Kafka gives each some of the partitions, and while
    # one waits on PostgreSQL or a provider the others work. More than the topics'
    # partition count would sit idle.
    consumers: PositiveInt = 1
    # /healthz and /readyz on a port of their own (``<SERVICE>_HEALTH_PORT``), for
    # services without an HTTP API (those with one serve them on it); 0: none.
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=0, ge=0, le=65535)
