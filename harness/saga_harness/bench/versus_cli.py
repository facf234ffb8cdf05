"""``sagactl bench relay --against debezium``: its options, and the command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_versus_arguments", "cmd_versus", "versus_config", "versus_summary"]


def add_versus_arguments(relay: argparse.ArgumentParser) -> None:
    """The options only ``--against`` uses (``--rows``, ``--duration`` and the rest are shared)."""
    group = relay.add_argument_group(
        "--against debezium",
        "Run the same workloads through our relay and through Debezium's embedded engine "
        "(3.6.1.Final, fetched from Maven Central once) with the Outbox Event Router, on the "
        "same PostgreSQL (wal_level=logical for the run) and broker, alternating which goes "
        "first; print a table of ratios.",
    )
    group.add_argument(
        "--against", choices=("debezium",), help="compare our relay with another relay"
    )
    group.add_argument(
        "--rates",
        default="200,1000,5000",
        help="steady rates, events/s, comma-separated (default 200,1000,5000)",
    )
    group.add_argument("--rounds", type=int, default=2, help="rounds of every workload (default 2)")
    group.add_argument(
        "--relay-warmup-events",
        type=int,
        default=30_000,
        help="events each relay publishes (to a topic of their own) before it is measured,"
        " so that Debezium's JVM has compiled its hot paths (default 30000)",
    )
    group.add_argument(
        "--debezium-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a connector, engine or producer.* property of the Debezium relay (repeatable)",
    )


def versus_config(args: argparse.Namespace) -> Any:
    """The comparison's configuration from the command line (ValueError if it makes none)."""
    from saga_harness.bench.debezium_config import parse_debezium_overrides
    from saga_harness.bench.relay_process import parse_overrides
    from saga_harness.bench.versus import VersusConfig

    if args.relay != "process":
        raise ValueError("--against runs our relay as a process (its CPU is measured)")
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    steady = tuple(f"steady-{r:g}" for r in rates)
    workloads = {None: ("drain", *steady), "drain": ("drain",), "steady": steady}[args.only]
    overrides = parse_overrides(args.set or [])
    if args.batch_size:
        overrides["RELAY_BATCH_SIZE"] = str(args.batch_size)
    return VersusConfig(
        workloads=workloads,
        rounds=args.rounds,
        rows=args.rows,
        duration=args.duration,
        warmup=5.0 if args.warmup is None else args.warmup,
        writers=args.writers,
        aggregates=args.aggregates,
        partitions=args.partitions,
        seed=args.seed,
        timeout=args.timeout,
        warmup_events=args.relay_warmup_events,
        overrides=tuple(overrides.items()),
        debezium_overrides=tuple(parse_debezium_overrides(args.debezium_set).items()),
    )


def versus_summary(result: dict[str, Any]) -> str:
    """What the terminal shows: the table, what went wrong, and the issue's two targets."""
    lines = ["bench relay --against debezium (ratio = ours ÷ Debezium)", result["table"]]
    failures = result["correctness_failures"]
    lines.append(
        "correctness: every event arrived, each aggregate in order, for both"
        if not failures
        else "correctness FAILED: " + "; ".join(failures)
    )
    lines.append(f"targets: {json.dumps(result['targets'])}")
    return "\n".join(lines)


def cmd_versus(args: argparse.Namespace) -> int:
    """Run the comparison on the bench stack; a stack this command started, it stops."""
    from saga_harness.bench.cli import _interrupt_on_sigterm, _machine, _say, _write
    from saga_harness.bench.spawn import bench_stack
    from saga_harness.bench.versus import run_versus
    from saga_runtime import LogSettings, configure_logging

    try:
        config = versus_config(args)
    except ValueError as exc:
        print(f"sagactl bench relay: {exc}", file=sys.stderr)
        return 2
    stack = bench_stack(args.state_dir)
    already_running = all(stack.status().values())
    configure_logging(LogSettings(level="WARNING"))
    _interrupt_on_sigterm()
    log_dir = args.state_dir / "bench" / f"relay-vs-debezium-{int(time.time())}"
    keep = args.keep_infra or already_running
    try:
        addresses = stack.ensure()
        _say(f"bench relay: stack up (kafka {addresses.kafka_bootstrap}); logs in {log_dir}")
        result = run_versus(
            config, stack=stack, log_dir=log_dir, progress=_say, restore_wal_level=keep
        )
    finally:
        if not keep:
            stack.stop()
    result["machine"] = _machine()
    result["logs"] = str(Path(log_dir))
    _say(versus_summary(result))
    # Results get committed: paths under the state dir are written relative to it.
    _write(without_state_dir(result, args.state_dir), args.json)
    return 0


def without_state_dir(value: Any, state_dir: Path) -> Any:
    """``value`` with every string path under ``state_dir`` made relative to it."""
    prefix = f"{Path(state_dir).resolve()}/"
    if isinstance(value, dict):
        return {k: without_state_dir(v, state_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [without_state_dir(v, state_dir) for v in value]
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix) :]
    return value
