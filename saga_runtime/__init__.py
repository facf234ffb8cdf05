"""The shared runtime every service imports: envelope, outbox, inbox, consumer runner, relay.

It knows nothing about any service's domain; services bring their events and
handlers, the runtime guarantees how they are stored, published and applied.

Names are imported on first use (PEP 562): a process loads the parts it uses, so a
consumer-only service starts without the web stack. Restart time matters: the chaos
suite's crash points restart a service every few seconds under load. The imports
under ``TYPE_CHECKING`` are the one list of what the package exports; the lookup
table is read from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saga_runtime._lazy import lazy_exports

if TYPE_CHECKING:
    from saga_runtime.aggregate_states import AggregateStates
    from saga_runtime.auth import AuthSettings, InvalidToken, Principal, TokenVerifier, mint_token
    from saga_runtime.backoff import Backoff
    from saga_runtime.consumer import ConsumerRunner, Handler, Outcome
    from saga_runtime.db import TRANSIENT_DB_ERRORS, connect, create_pool, is_transient_db_error
    from saga_runtime.db_logins import (
        login_credentials,
        login_role,
        password_variable,
        relay_login,
        set_login_passwords,
    )
    from saga_runtime.dead_letters import (
        DeadLetter,
        DeadLetterPublisher,
        DeadLetterPublishError,
        DeadLetterStore,
        KafkaDeadLetterPublisher,
    )
    from saga_runtime.effect_declarations import EffectDeclaration, effect
    from saga_runtime.effect_executor import EffectExecutor
    from saga_runtime.effect_retry import RetryPolicy, is_retryable
    from saga_runtime.effects import Effect, EffectKind, EffectOutcome, Effects
    from saga_runtime.effects_schema import effects_ddl
    from saga_runtime.envelope import Envelope, Event
    from saga_runtime.errors import (
        ConfigurationError,
        EffectUsageError,
        ForgedEventError,
        InvalidEnvelopeError,
        OutboxUsageError,
        PoisonMessageError,
        RetryableError,
        RetryUntilDoneError,
        SagaRuntimeError,
    )
    from saga_runtime.faults import CrashPointError, crash_point
    from saga_runtime.health import (
        DatabaseProbe,
        Health,
        HealthReport,
        HealthServer,
        add_health_routes,
    )
    from saga_runtime.inbox import Inbox
    from saga_runtime.inbox_retention import (
        InboxSettings,
        check_inbox_retention,
        purge_inbox,
        topic_retentions,
        verify_inbox_retention,
    )
    from saga_runtime.kafka import consumer_config, ensure_topics, producer_config
    from saga_runtime.lifecycle import (
        Composition,
        CompositionRoot,
        build_runtime,
        composition_root,
        run_service,
    )
    from saga_runtime.logs import configure_logging, get_logger
    from saga_runtime.metrics import saga_finished
    from saga_runtime.metrics_http import QueryGauge
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
    from saga_runtime.schema import (
        RUNTIME_TABLES,
        create_service_schema,
        drop_service_schema,
        grant_service_logins,
        service_schema_statements,
    )
    from saga_runtime.service import ServiceRuntime
    from saga_runtime.settings import (
        ConsumerSettings,
        DatabaseSettings,
        EffectSettings,
        KafkaSettings,
        LogSettings,
        RelaySettings,
        ServiceSettings,
    )
    from saga_runtime.system import DefinitionError, Reaction, Service, System, reaction
    from saga_runtime.text import (
        EMAIL_DESCRIPTION,
        EMAIL_PATTERN,
        NON_BLANK,
        NON_BLANK_PATTERN,
        PRINTABLE,
        PRINTABLE_PATTERN,
        WHOLE_NUMBER,
        Email,
        Printable,
        Text,
        check_email,
        check_non_blank,
        check_printable,
    )
    from saga_runtime.unit_of_work import UnitOfWork, UnitOfWorkFactory
    from saga_runtime.web import (
        RETRY_AFTER_SECONDS,
        JsonBodyRoute,
        Problem,
        field_errors,
        install_error_handlers,
        problem,
        unavailable_response,
    )
    from saga_runtime.web_auth import (
        Authenticated,
        api_key_guard,
        auth_responses,
        authenticate,
        install_authentication,
        require_scope,
    )
    from saga_runtime.workers import Worker, Workers, run_workers, stop_on_signals

__getattr__ = lazy_exports(__name__, __file__, globals())

__all__ = [
    "EMAIL_DESCRIPTION",
    "EMAIL_PATTERN",
    "NON_BLANK",
    "NON_BLANK_PATTERN",
    "PRINTABLE",
    "PRINTABLE_PATTERN",
    "RETRY_AFTER_SECONDS",
    "RUNTIME_TABLES",
    "TRANSIENT_DB_ERRORS",
    "WHOLE_NUMBER",
    "AggregateStates",
    "AuthSettings",
    "Authenticated",
    "Backoff",
    "BatchResult",
    "BrokerUnreachable",
    "Composition",
    "CompositionRoot",
    "ConfigurationError",
    "ConsumerRunner",
    "ConsumerSettings",
    "CrashPointError",
    "DatabaseProbe",
    "DatabaseSettings",
    "DeadLetter",
    "DeadLetterPublishError",
    "DeadLetterPublisher",
    "DeadLetterStore",
    "DefinitionError",
    "Effect",
    "EffectDeclaration",
    "EffectExecutor",
    "EffectKind",
    "EffectOutcome",
    "EffectSettings",
    "EffectUsageError",
    "Effects",
    "Email",
    "Envelope",
    "Event",
    "ForgedEventError",
    "Handler",
    "Health",
    "HealthReport",
    "HealthServer",
    "Inbox",
    "InboxSettings",
    "InvalidEnvelopeError",
    "InvalidToken",
    "JsonBodyRoute",
    "KafkaDeadLetterPublisher",
    "KafkaSettings",
    "LogSettings",
    "Outbox",
    "OutboxRelay",
    "OutboxUsageError",
    "Outcome",
    "PoisonMessageError",
    "Principal",
    "Printable",
    "Problem",
    "ProducerFatalError",
    "QueryGauge",
    "Reaction",
    "RelaySettings",
    "RetryPolicy",
    "RetryUntilDoneError",
    "RetryableError",
    "SagaRuntimeError",
    "Service",
    "ServiceRuntime",
    "ServiceSettings",
    "System",
    "Text",
    "TokenVerifier",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "Worker",
    "Workers",
    "add_health_routes",
    "api_key_guard",
    "auth_responses",
    "authenticate",
    "build_runtime",
    "check_email",
    "check_inbox_retention",
    "check_non_blank",
    "check_printable",
    "composition_root",
    "configure_logging",
    "connect",
    "consumer_config",
    "consumer_group",
    "crash_point",
    "create_pool",
    "create_service_schema",
    "dead_letter_topic",
    "drop_service_schema",
    "effect",
    "effects_ddl",
    "ensure_topics",
    "events_topic",
    "field_errors",
    "get_logger",
    "grant_service_logins",
    "install_authentication",
    "install_error_handlers",
    "is_retryable",
    "is_transient_db_error",
    "login_credentials",
    "login_role",
    "mint_token",
    "notify_channel",
    "password_variable",
    "problem",
    "producer_config",
    "purge_inbox",
    "reaction",
    "relay_lock_key",
    "relay_login",
    "require_scope",
    "run_service",
    "run_workers",
    "saga_finished",
    "service_schema_statements",
    "set_login_passwords",
    "stop_on_signals",
    "topic_retentions",
    "unavailable_response",
    "validate_service_name",
    "verify_inbox_retention",
]
