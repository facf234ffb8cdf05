"""The shared runtime every service imports: envelope, outbox, inbox, consumer runner, relay.

It knows nothing about orders or stock; services bring their events and
handlers, the runtime guarantees how they are stored, published and applied.
"""

from saga_runtime.backoff import Backoff
from saga_runtime.consumer import ConsumerRunner, Handler, Outcome
from saga_runtime.db import TRANSIENT_DB_ERRORS, connect, create_pool, is_transient_db_error
from saga_runtime.dead_letters import (
    DeadLetter,
    DeadLetterPublisher,
    DeadLetterPublishError,
    DeadLetterStore,
    KafkaDeadLetterPublisher,
)
from saga_runtime.envelope import Envelope, Event
from saga_runtime.errors import (
    ConfigurationError,
    InvalidEnvelopeError,
    OutboxUsageError,
    PoisonMessageError,
    RetryableError,
    SagaRuntimeError,
)
from saga_runtime.faults import crash_point
from saga_runtime.inbox import Inbox
from saga_runtime.inbox_retention import (
    InboxSettings,
    check_inbox_retention,
    purge_inbox,
    topic_retentions,
    verify_inbox_retention,
)
from saga_runtime.kafka import consumer_config, ensure_topics, producer_config
from saga_runtime.logs import configure_logging, get_logger
from saga_runtime.naming import (
    consumer_group,
    dead_letter_topic,
    events_topic,
    notify_channel,
    relay_lock_key,
    validate_service_name,
)
from saga_runtime.outbox import Outbox
from saga_runtime.relay import BatchResult, BrokerUnreachable, OutboxRelay, ProducerFatalError
from saga_runtime.service import ServiceRuntime
from saga_runtime.settings import (
    ConsumerSettings,
    DatabaseSettings,
    KafkaSettings,
    LogSettings,
    RelaySettings,
    ServiceSettings,
)
from saga_runtime.unit_of_work import UnitOfWork, UnitOfWorkFactory

__all__ = [
    "TRANSIENT_DB_ERRORS",
    "Backoff",
    "BatchResult",
    "BrokerUnreachable",
    "ConfigurationError",
    "ConsumerRunner",
    "ConsumerSettings",
    "DatabaseSettings",
    "DeadLetter",
    "DeadLetterPublishError",
    "DeadLetterPublisher",
    "DeadLetterStore",
    "Envelope",
    "Event",
    "Handler",
    "Inbox",
    "InboxSettings",
    "InvalidEnvelopeError",
    "KafkaDeadLetterPublisher",
    "KafkaSettings",
    "LogSettings",
    "Outbox",
    "OutboxRelay",
    "OutboxUsageError",
    "Outcome",
    "PoisonMessageError",
    "ProducerFatalError",
    "RelaySettings",
    "RetryableError",
    "SagaRuntimeError",
    "ServiceRuntime",
    "ServiceSettings",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "check_inbox_retention",
    "configure_logging",
    "connect",
    "consumer_config",
    "consumer_group",
    "crash_point",
    "create_pool",
    "dead_letter_topic",
    "ensure_topics",
    "events_topic",
    "get_logger",
    "is_transient_db_error",
    "notify_channel",
    "producer_config",
    "purge_inbox",
    "relay_lock_key",
    "topic_retentions",
    "validate_service_name",
    "verify_inbox_retention",
]
