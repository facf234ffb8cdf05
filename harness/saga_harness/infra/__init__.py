"""Local infrastructure for development and tests: PostgreSQL and a KRaft Kafka broker."""

from saga_harness.infra.errors import InfraError
from saga_harness.infra.kafka import (
    DEFAULT_KAFKA_VERSION,
    LocalKafka,
    install_kafka,
    kafka_cache_dir,
    wait_for_kafka,
)
from saga_harness.infra.postgres import LocalPostgres, ensure_database, wait_for_postgres
from saga_harness.infra.stack import (
    LocalStack,
    StackAddresses,
    ensure_stack,
    read_addresses,
    stack_status,
    stop_stack,
)

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "InfraError",
    "LocalKafka",
    "LocalPostgres",
    "LocalStack",
    "StackAddresses",
    "ensure_database",
    "ensure_stack",
    "install_kafka",
    "kafka_cache_dir",
    "read_addresses",
    "stack_status",
    "stop_stack",
    "wait_for_kafka",
    "wait_for_postgres",
]
