"""A system of the benchmark's own: its own database and topics on the bench stack."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg

from saga_harness.bench.cpu import Target
from saga_harness.bench.saga import BENCH_SKUS
from saga_harness.infra import LocalStack
from saga_harness.system import System, build_system, drop_system_database, drop_system_topics
from stock.domain import Product
from stock.repository import StockRepository

__all__ = ["BENCH_ENV", "HARNESS_LABELS", "bench_stack", "bench_system", "cpu_targets"]

# What differs from the defaults, and why (BENCHMARKS.md lists these too).
BENCH_ENV = {
    # The simulated carrier books at once (the demo gives it 2 s so that a
    # customer can still cancel; a benchmark measures our code, not a sleep).
    "SHIPMENTS_BOOKING_SECONDS": "0",
    "ORDERS_PENDING_TIMEOUT": "60",
    "ORDERS_DEADLINE_CHECK_INTERVAL": "2",
    "RELAY_POLL_INTERVAL": "1",
    "CONSUMER_BACKOFF_MAX": "1.0",
}


# What of the CPU the saga benchmark reports is the harness's, not the system's: the
# simulators and their backends (the provider connects as "payment-provider"), and the
# bench's own backends ("bench:backlog", "bench:cpu"). The bench client adds itself.
HARNESS_LABELS = frozenset(
    {"provider", "smtp-sink", "postgres (payment-provider)", "postgres (bench)"}
)


def bench_stack(state_dir: Path) -> LocalStack:
    """PostgreSQL and Kafka on ports of their own, so a benchmark never meets ``./dev up``.

    ``SAGA_BENCH_PG_PORT`` and ``SAGA_BENCH_KAFKA_PORT`` (controller: the next port) move them.
    """
    kafka_port = int(os.environ.get("SAGA_BENCH_KAFKA_PORT", "19392"))
    return LocalStack(
        state_dir=state_dir / "bench",
        pg_port=int(os.environ.get("SAGA_BENCH_PG_PORT", "55435")),
        kafka_port=kafka_port,
        kafka_controller_port=kafka_port + 1,
        kafka_heap="1g",
    )


@contextlib.contextmanager
def bench_system(
    stack: LocalStack, log_dir: Path, *, relays: int = 1, env: dict[str, str] | None = None
) -> Iterator[System]:
    """Start the whole system on ``stack``; stock the bench SKUs without limit; tear it down."""
    addresses = stack.ensure()
    system = build_system(
        admin_database_url=addresses.admin_database_url,
        kafka_bootstrap=addresses.kafka_bootstrap,
        log_dir=log_dir,
        relays=relays,
        extra_env={**BENCH_ENV, **(env or {})},
    )
    with psycopg.connect(system.database_url, autocommit=True) as conn, conn.transaction():
        repository = StockRepository(conn)
        for n, sku in enumerate(BENCH_SKUS):
            stocked = 1_000_000_000
            repository.insert_product(
                Product(sku, f"Bench product {n}", 500 + n, on_hand=stocked, received=stocked)
            )
    system.start()
    try:
        system.wait_ready()
        yield system
    finally:
        system.stop()
        drop_system_database(addresses.admin_database_url, system.database_url)
        drop_system_topics(system.kafka)


def cpu_targets(system: System, stack: LocalStack) -> dict[str, Target]:
    """The processes whose CPU the saga benchmark reports, by label.

    PostgreSQL is the postmaster with its backends and other children (a tree);
    Kafka is one JVM; each of the system's processes is counted by its name.
    """
    targets = {
        name: Target(process.popen.pid if process.popen is not None else None)
        for name, process in system.processes.items()
    }
    targets["postgres"] = Target(stack.postgres.pid, tree=True)
    targets["kafka"] = Target(stack.kafka.pid)
    return targets
