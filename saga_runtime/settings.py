"""Settings shared by every process, read from the environment (pydantic-settings)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal, Self

from pydantic import (
    AliasChoices,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from saga_runtime.errors import ConfigurationError

__all__ = [
    "ConsumerSettings",
    "DatabaseSettings",
    "EffectSettings",
    "KafkaSettings",
    "LogSettings",
    "RelaySettings",
    "ServiceSettings",
]


class KafkaSettings(BaseSettings):
    """Where the broker is, who this process is to it, and how topics are named.

    Plain mode (``KAFKA_SECURITY_PROTOCOL=PLAINTEXT``, the default) is for a broker that
    checks nobody. Secured mode (``SASL_PLAINTEXT`` or ``SASL_SSL``) logs in as
    ``KAFKA_SASL_USERNAME`` with ``KAFKA_SASL_PASSWORD`` (SCRAM-SHA-512 unless
    ``KAFKA_SASL_MECHANISM`` says otherwise); each process has a principal of its own,
    whose ACLs ``saga_runtime.kafka_access`` derives from the system. ``client_config``
    passes extra librdkafka properties through unchanged (TLS files, for example), as
    JSON: ``KAFKA_CLIENT_CONFIG='{"ssl.ca.location":"/etc/ca.pem"}'``.
    """

    # hide_input_in_errors: a validation error must not quote the password it was given.
    model_config = SettingsConfigDict(
        env_prefix="KAFKA_", extra="ignore", hide_input_in_errors=True
    )

    bootstrap_servers: str = "127.0.0.1:19092"
    topic_prefix: str = ""
    topic_partitions: PositiveInt = 3
    client_config: dict[str, str] = Field(default_factory=dict)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    # A SecretStr: shown as ``**********`` in reprs, dumps and errors.
    sasl_password: SecretStr | None = None

    def client_properties(self) -> dict[str, Any]:
        """librdkafka properties every client of this process needs: the broker's address,
        how to log in to it, and ``client_config``, which wins."""
        properties: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL_"):
            if not (self.sasl_username and self.sasl_password):
                # Checked here, not when the settings are read: the relay logs in once per
                # outbox, with credentials of its own (``RELAY_KAFKA_PASSWORDS``).
                raise ConfigurationError(
                    f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs"
                    " KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
                )
            properties.update(
                {
                    "sasl.mechanisms": self.sasl_mechanism,
                    "sasl.username": self.sasl_username,
                    "sasl.password": self.sasl_password.get_secret_value(),
                }
            )
        return {**properties, **self.client_config}

    def as_principal(self, username: str, password: str | SecretStr) -> KafkaSettings:
        """The same broker and topics, logged in as another principal (the relay logs in
        once per outbox it relays)."""
        secret = password if isinstance(password, SecretStr) else SecretStr(password)
        return self.model_copy(update={"sasl_username": username, "sasl_password": secret})


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
    # A peer that vanished (power loss, network cut) is noticed by TCP keepalives
    # on an idle connection (idle + interval x count = 11 s by default), and by
    # the user timeout when data it was sent stays unacknowledged (10 s). Set on
    # both ends: libpq's on ours, the server's ``tcp_keepalives_*`` and
    # ``tcp_user_timeout`` per session, since only the server's own settings
    # make it end a session (and free its locks) whose client is gone.
    keepalives_idle: PositiveInt = Field(
        default=5, validation_alias=AliasChoices("DATABASE_KEEPALIVES_IDLE", "keepalives_idle")
    )
    keepalives_interval: PositiveInt = Field(
        default=2,
        validation_alias=AliasChoices("DATABASE_KEEPALIVES_INTERVAL", "keepalives_interval"),
    )
    keepalives_count: PositiveInt = Field(
        default=3, validation_alias=AliasChoices("DATABASE_KEEPALIVES_COUNT", "keepalives_count")
    )
    tcp_user_timeout: PositiveFloat = Field(
        default=10.0, validation_alias=AliasChoices("DATABASE_TCP_USER_TIMEOUT", "tcp_user_timeout")
    )
    # A frozen client (its kernel still answers keepalives) that left a
    # transaction open loses it, and its locks, after this long (0: never).
    # It must exceed the longest wait inside a transaction, or a slow but live
    # handler would be cut off and retried for ever. Today, by default, the
    # longest is a side-effecting handler's outside calls, about 26 s (attempts
    # x timeout + backoff; the README's settings table names it). 60 s is over
    # twice the longest; raise it with any setting that lengthens those calls.
    idle_in_transaction_timeout: NonNegativeFloat = Field(
        default=60.0,
        validation_alias=AliasChoices(
            "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT", "idle_in_transaction_timeout"
        ),
    )
    # No statement waits longer than this for a lock (0: for ever); it then fails
    # with LockNotAvailable, which every caller retries as transient. Longer than
    # a live handler holds an aggregate's lock (see above), so it does not fire in
    # normal operation; it bounds a wait behind a holder the timeouts above have
    # not ended yet, or behind an operator's session.
    lock_timeout: NonNegativeFloat = Field(
        default=30.0, validation_alias=AliasChoices("DATABASE_LOCK_TIMEOUT", "lock_timeout")
    )


class ConsumerSettings(BaseSettings):
    """How the consumer runner retries, when it gives up on a message, how it batches."""

    model_config = SettingsConfigDict(env_prefix="CONSUMER_", extra="ignore")

    # A handler's RetryableError (a dependency is down) is retried for this many
    # seconds from its first failure, with backoff up to ``retry_backoff_max``; only
    # then is the message dead-lettered. Outages of a few minutes are waited out.
    retry_for: PositiveFloat = 600.0
    retry_backoff_max: PositiveFloat = 30.0
    # Optional cap on attempts as well (unset: the time budget alone decides).
    max_attempts: PositiveInt | None = None
    # Messages already fetched that one transaction applies together (1: one each).
    batch_size: PositiveInt = 100
    # ...and for no longer than this: the events emitted by a batch's first message
    # wait for the batch to commit (a handler that calls out, to send mail say,
    # takes milliseconds).
    batch_max_seconds: NonNegativeFloat = 0.05
    # Backoff between attempts starts at ``backoff_initial`` and doubles: up to
    # ``backoff_max`` while the database or the broker is unavailable (retried for
    # ever), up to ``retry_backoff_max`` after a handler's RetryableError.
    backoff_initial: PositiveFloat = 0.2
    backoff_max: PositiveFloat = 5.0
    poll_timeout: PositiveFloat = 0.5
    session_timeout_ms: PositiveInt = 10_000
    # Stored offsets (messages whose transaction committed) go to the broker this often.
    # What a killed process's successor receives again is at most this much of the work
    # (the inbox makes it a duplicate): librdkafka's 5 s default meant that a process
    # killed every few seconds (the chaos crash points) never committed at all, and
    # each of its lives started over from the same offsets.
    commit_interval_ms: PositiveInt = 1_000
    # Static group membership (KIP-345), opt-in: a process restarted by its supervisor
    # with the same id takes its partitions back at once, instead of waiting out the
    # dead member's session and a rebalance. Each consumer of the process gets
    # ``<id>-<service>-<n>``; ids must differ between replicas of one service (use the
    # pod or host name). A static member does not leave its group on shutdown: its
    # partitions wait for it (or for ``session_timeout_ms``).
    group_instance_id: str | None = None
    # Longest time between two polls before the broker evicts the consumer from its
    # group; the runner goes back to poll after half of it (``ConsumerRunner``).
    max_poll_interval_ms: PositiveInt = 300_000
    # A consumer out of its group, or not fetching a partition it holds, for this
    # long is replaced by a new one (a librdkafka stall after a broker restart).
    stall_seconds: PositiveFloat = 60.0
    # /readyz stays ready through a consumer problem shorter than this (a
    # rebalance takes seconds); keep it under stall_seconds.
    ready_grace: NonNegativeFloat = 30.0

    @model_validator(mode="after")
    def _poll_interval_covers_the_session(self) -> Self:
        # librdkafka refuses a max.poll.interval.ms below session.timeout.ms.
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ValueError(
                "CONSUMER_MAX_POLL_INTERVAL_MS must be at least CONSUMER_SESSION_TIMEOUT_MS"
            )
        return self


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
    # The leader's lease: PostgreSQL ends the leader's session (and so frees its
    # lock) once it has sent nothing for this long, so a frozen leader is
    # replaced within about this long (see ``OutboxRelay``).
    lease: PositiveFloat = 10.0
    # An active relay whose messages the broker has not acknowledged for this
    # long steps down, so a standby that can reach the broker takes over.
    broker_stepdown: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _lease_outlasts_polling(self) -> RelaySettings:
        # A standby polls the lock on a session under the same idle limit.
        if self.lock_retry_interval * 2 > self.lease:
            raise ValueError("RELAY_LEASE must be at least twice RELAY_LOCK_RETRY_INTERVAL")
        return self


class EffectSettings(BaseSettings):
    """How a service's effect executor claims, leases and runs calls to the outside world."""

    model_config = SettingsConfigDict(env_prefix="EFFECTS_", extra="ignore")

    # Calls in flight at once, each on a thread of its own: most of a call's time is
    # spent waiting for the far side, so this is sized by latency, not by CPUs.
    concurrency: PositiveInt = 32
    # Effects claimed per statement (never more than the free threads).
    claim_batch: PositiveInt = 100
    # Outcomes that arrived together, recorded and decided in one transaction (1: each alone).
    settle_batch: PositiveInt = 50
    # A claimed effect is the executor's for this long; after it another executor may
    # take it over and call again with the same key. Renewed every third of it while
    # the call runs (however slow the call), so it bounds only how long the effects of a
    # process that died wait before another executor (its next life) takes them over.
    lease: PositiveFloat = 15.0
    # Fallback when no in-process nudge arrives (requests by other processes, retries).
    poll_interval: PositiveFloat = 1.0
    # While the database is unavailable, claims and recordings are retried with this backoff.
    backoff_initial: PositiveFloat = 0.2
    backoff_max: PositiveFloat = 5.0
    # A decision about an outcome that raises (a bug, not the database) is tried this many
    # times, then the effect is left ``undecided`` for an operator; never called again.
    decision_attempts: PositiveInt = 3


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
    effects: EffectSettings = Field(default_factory=EffectSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    # Consumers of the service's group in this process, each on a thread of its own
    # (``<SERVICE>_CONSUMERS``): Kafka gives each some of the partitions, and while
    # one waits on PostgreSQL or an outside service the others work. More than the topics'
    # partition count would sit idle.
    consumers: PositiveInt = 1
    # /healthz and /readyz on a port of their own (``<SERVICE>_HEALTH_PORT``), for
    # services without an HTTP API (those with one serve them on it); 0: none.
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=0, ge=0, le=65535)
    # Prometheus's /metrics on a port of its own (``<SERVICE>_METRICS_PORT``), for services
    # without an HTTP API (those with one serve it on it), on ``health_host``; 0: none.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # ``METRICS_ENABLED=false`` records nothing (the endpoints stay, their counters at 0):
    # for measuring what the instrumentation costs.
    metrics_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("METRICS_ENABLED", "metrics_enabled")
    )
