"""``sagactl bench relay --against debezium``: our relay and Debezium's outbox router, same load.

Same PostgreSQL, same broker, same workloads, one relay after the other: round 1 runs ours
first on each workload, round 2 Debezium first, and so on alternately, so that neither
always meets a warmer host. Every run has a database and a topic of its own. The stack's
PostgreSQL runs with ``wal_level = logical`` for the whole comparison (Debezium needs it;
our relay then runs on the same server settings) and gets its own setting back after.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from saga_harness.bench.debezium_config import connector_properties
from saga_harness.bench.debezium_relay import DebeziumRelay, logical_wal, replication_slot
from saga_harness.bench.relay import fresh_database, fresh_topic
from saga_harness.bench.relay_phase import SCHEMA, Progress
from saga_harness.bench.relay_process import (
    RELAY_NAME,
    RelayUnderTest,
    effective_settings,
    relay_env,
)
from saga_harness.bench.versus_drain import run_drain
from saga_harness.bench.versus_figures import (
    DEBEZIUM,
    OURS,
    correctness_failures,
    pool_runs,
    ratio_rows,
    render_ratios,
)
from saga_harness.bench.versus_run import Contender, RunContext
from saga_harness.bench.versus_steady import SteadyLoad, run_steady
from saga_harness.infra import LocalStack
from saga_harness.infra.debezium import DEBEZIUM_VERSION, DebeziumRuntime, ensure_debezium
from saga_runtime import ensure_topics, events_topic

__all__ = ["VersusConfig", "run_versus", "schedule", "writers_for"]

TABLE = f"{SCHEMA}.outbox"


@dataclass(frozen=True)
class VersusConfig:
    """The comparison's options (``bench/cli.py`` maps the flags onto these)."""

    workloads: tuple[str, ...] = ("drain", "steady-200", "steady-1000", "steady-5000")
    rounds: int = 2
    rows: int = 100_000
    duration: float = 30.0
    warmup: float = 5.0
    writers: int | None = None  # None: writers_for(rate)
    aggregates: int = 10_000
    partitions: int = 3
    seed: int = 1
    timeout: float = 600.0
    warmup_events: int = 30_000  # through each relay before it is measured
    overrides: tuple[tuple[str, str], ...] = ()  # RELAY_* / KAFKA_CLIENT_CONFIG for ours
    debezium_overrides: tuple[tuple[str, str], ...] = ()  # connector/engine/producer.*


def writers_for(rate: float) -> int:
    """Writer threads for ``rate``: 4, or one per 125 events/s if that is more.

    A writer waits for its commit's WAL flush; on the bench machine one writer commits
    some 150 transactions a second, so four fall short of 1,000/s (measured: 630/s).
    """
    return max(4, math.ceil(rate / 125))


def schedule(config: VersusConfig) -> list[tuple[int, str, str]]:
    """(round, workload, relay) in running order: odd rounds ours first, even Debezium first."""
    order = []
    for n in range(1, config.rounds + 1):
        relays = (OURS, DEBEZIUM) if n % 2 else (DEBEZIUM, OURS)
        order += [(n, workload, relay) for workload in config.workloads for relay in relays]
    return order


def _slot(ctx: RunContext) -> str:
    # Slot names are lower-case letters, digits and underscores; the database's name is.
    return "bench_" + ctx.database_url.rsplit("/", 1)[-1]


def _contenders(
    config: VersusConfig,
    runtime: DebeziumRuntime,
    env: dict[str, str],
    producer: dict[str, Any],
    last_properties: dict[str, str],
) -> dict[str, Contender]:
    """Our relay (``python -m outbox_relay``) and Debezium's; the latter notes its properties."""

    def ours(ctx: RunContext) -> RelayUnderTest:
        run_env = {
            **env,
            "DATABASE_URL": ctx.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": ctx.kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": ctx.kafka.topic_prefix,
        }
        if ctx.workload == "drain":
            # Frozen while the backlog is written (see versus_drain): a lease as long as the
            # walsender's timeout (60 s) that Debezium gets, so neither loses its session.
            run_env.setdefault("RELAY_LEASE", "60")
        return RelayUnderTest(
            mode="process",
            schema=SCHEMA,
            database_url=ctx.database_url,
            env=run_env,
            log_path=ctx.run_dir / "relay.log",
        )

    def debezium(ctx: RunContext) -> DebeziumRelay:
        properties = connector_properties(
            database_url=ctx.database_url,
            kafka_bootstrap=ctx.kafka.bootstrap_servers,
            table=TABLE,
            slot=_slot(ctx),
            offsets_file=ctx.run_dir / "offsets.dat",
            producer=producer,
            overrides=dict(config.debezium_overrides),
        )
        last_properties.clear()
        last_properties.update(properties)
        return DebeziumRelay(
            runtime=runtime,
            database_url=ctx.database_url,
            slot=_slot(ctx),
            properties=properties,
            work_dir=ctx.run_dir,
            log_path=ctx.run_dir / "relay.log",
        )

    return {
        OURS: Contender(OURS, ours, lambda _ctx: contextlib.nullcontext(), wakeup=True),
        DEBEZIUM: Contender(
            DEBEZIUM,
            debezium,
            lambda ctx: replication_slot(ctx.database_url, slot=_slot(ctx), table=TABLE),
            wakeup=False,
        ),
    }


@contextlib.contextmanager
def _run_context(
    stack: LocalStack, config: VersusConfig, workload: str, label: str, run_dir: Path
) -> Iterator[RunContext]:
    addresses = stack.addresses
    with (
        fresh_database(addresses.admin_database_url) as database_url,
        fresh_topic(addresses.kafka_bootstrap, config.partitions) as kafka,
    ):
        warmup_topic = f"{kafka.topic_prefix}warmup.events"
        ensure_topics(kafka, [warmup_topic])
        yield RunContext(
            label=label,
            workload=workload,
            database_url=database_url,
            kafka=kafka,
            topic=events_topic(SCHEMA, kafka.topic_prefix),
            warmup_topic=warmup_topic,
            run_dir=run_dir,
            postgres_pid=stack.postgres.pid,
            kafka_pid=stack.kafka.pid,
        )


def run_versus(
    config: VersusConfig,
    *,
    stack: LocalStack,
    log_dir: Path,
    progress: Progress,
    restore_wal_level: bool,
) -> dict[str, Any]:
    """Every run of the schedule, the pooled figures and the table of ratios (JSON-able)."""
    runtime = ensure_debezium(log=progress)
    env = relay_env(SCHEMA, dict(config.overrides))
    ours_settings = effective_settings(env, client_id=f"{RELAY_NAME}-{SCHEMA}")
    debezium_properties: dict[str, str] = {}
    contenders = _contenders(
        config, runtime, env, ours_settings["producer_config"], debezium_properties
    )
    runs: list[dict[str, Any]] = []
    latencies: dict[tuple[str, str], list[float]] = {}
    with logical_wal(stack.postgres, restore=restore_wal_level):
        for round_no, workload, relay in schedule(config):
            label = f"round{round_no}-{workload}-{relay}"
            progress(f"bench relay --against debezium: {label}")
            load_before = os.getloadavg()[0]
            with _run_context(stack, config, workload, label, log_dir / label) as ctx:
                figures = _one_run(config, ctx, contenders[relay], workload, latencies, progress)
            figures["load_average_1m"] = {
                "before": round(load_before, 2),
                "after": round(os.getloadavg()[0], 2),
            }
            runs.append(
                {"round": round_no, "workload": workload, "relay": relay, "figures": figures}
            )
    pooled = pool_runs(runs, latencies)
    rows = ratio_rows(pooled)
    return {
        "benchmark": "relay-vs-debezium",
        "config": asdict(config),
        OURS: ours_settings,
        DEBEZIUM: {
            "version": DEBEZIUM_VERSION,
            # As the last run had them (its database, slot and offsets file).
            "properties": {
                k: "***" if k == "database.password" and v else v
                for k, v in debezium_properties.items()
            },
        },
        "runs": runs,
        "pooled": pooled,
        "ratios": [r.as_dict() for r in rows],
        "table": render_ratios(rows),
        "correctness_failures": correctness_failures(pooled),
        "targets": _targets(pooled),
    }


def _one_run(
    config: VersusConfig,
    ctx: RunContext,
    contender: Contender,
    workload: str,
    latencies: dict[tuple[str, str], list[float]],
    progress: Progress,
) -> dict[str, Any]:
    if workload == "drain":
        return run_drain(
            ctx,
            contender,
            rows=config.rows,
            aggregates=config.aggregates,
            seed=config.seed,
            warmup_events=config.warmup_events,
            timeout=config.timeout,
            say=progress,
        )
    rate = float(workload.removeprefix("steady-"))
    load = SteadyLoad(
        rate=rate,
        duration=config.duration,
        warmup=config.warmup,
        writers=config.writers or writers_for(rate),
        aggregates=config.aggregates,
        warmup_events=config.warmup_events,
    )
    figures, measured = run_steady(ctx, contender, load, say=progress)
    latencies.setdefault((workload, contender.name), []).extend(measured)
    return figures


def _targets(pooled: dict[str, dict[str, dict[str, Any]]]) -> dict[str, bool | None]:
    """Issue 18's targets: p99 at 1,000/s no worse than Debezium's, drain at least equal."""
    steady = pooled.get("steady-1000", {})
    drain = pooled.get("drain", {})
    ours_p99 = steady.get(OURS, {}).get("commit_to_ack_ms", {}).get("p99")
    their_p99 = steady.get(DEBEZIUM, {}).get("commit_to_ack_ms", {}).get("p99")
    ours_rate = drain.get(OURS, {}).get("events_per_s")
    their_rate = drain.get(DEBEZIUM, {}).get("events_per_s")
    return {
        "steady_1000_p99_no_worse": None
        if ours_p99 is None or their_p99 is None
        else ours_p99 <= their_p99,
        "drain_at_least_equal": None
        if ours_rate is None or their_rate is None
        else ours_rate >= their_rate,
    }
