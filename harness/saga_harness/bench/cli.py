"""``sagactl bench``: the saga benchmark, the relay benchmark and the latency sweep."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_relay_parser", "register"]


def _write(result: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"bench: results written to {path}", file=sys.stderr)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _interrupt_on_sigterm() -> None:
    """SIGTERM tears the bench system and stack down like Ctrl-C does."""
    import signal

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _settings(assignments: list[str]) -> dict[str, str]:
    """``--set NAME=VALUE`` options as the system's environment (over BENCH_ENV)."""
    settings: dict[str, str] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name or not name.replace("_", "").isalnum() or name != name.upper():
            raise SystemExit(f"--set takes NAME=VALUE with an upper-case NAME, not {assignment!r}")
        settings[name] = value
    return settings


def cmd_saga(args: argparse.Namespace) -> int:
    from saga_harness.bench.render import saga_summary
    from saga_harness.bench.saga import SagaBenchConfig
    from saga_harness.bench.spawn import bench_stack, bench_system

    config = SagaBenchConfig(
        mode="closed" if args.clients else "open",
        rate=args.rate,
        clients=args.clients or 0,
        duration=args.duration,
        warmup=args.warmup,
        seed=args.seed,
    )
    _interrupt_on_sigterm()
    stack = bench_stack(args.state_dir)
    warmup = _warmup_seconds(args, stack)
    log_dir = args.state_dir / "bench" / f"saga-{int(time.time())}"
    try:
        with bench_system(stack, log_dir, env=_settings(args.set)) as system:
            warmed = _warm_up(system, warmup)
            result = _one_run(system, stack, config, log_dir, audit=args.audit)
            result["warmup_load"] = warmed
    finally:
        if not args.keep_infra:
            stack.stop()
    _say(saga_summary(result))
    _write(result, args.json)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Open loop at each rate in turn on one system; JSON of every run and the PNG plot."""
    from saga_harness.bench.plot import plot_sweep
    from saga_harness.bench.render import saga_summary
    from saga_harness.bench.saga import SagaBenchConfig
    from saga_harness.bench.spawn import bench_stack, bench_system

    rates = [float(r) for r in args.rates.split(",")]
    _interrupt_on_sigterm()
    stack = bench_stack(args.state_dir)
    warmup = _warmup_seconds(args, stack)
    log_dir = args.state_dir / "bench" / f"sweep-{int(time.time())}"
    results: list[dict[str, Any]] = []
    warmed: dict[str, Any] = {}
    try:
        with bench_system(stack, log_dir, env=_settings(args.set)) as system:
            warmed = _warm_up(system, warmup)
            for rate in rates:
                config = SagaBenchConfig(
                    rate=rate, duration=args.duration, warmup=args.warmup, seed=args.seed
                )
                result = _one_run(system, stack, config, log_dir, audit=False)
                _say(saga_summary(result))
                results.append(result)
            if args.audit:
                _say("bench: auditing every saga of the sweep (sagactl audit's rules)")
                violations = [str(v) for v in system.wait_quiet(timeout=120)]
                results[-1]["violations"] = violations[:20]
    finally:
        if not args.keep_infra:
            stack.stop()
    out = {"machine": _machine(), "warmup_load": warmed, "runs": results}
    _write(out, args.json)
    if args.plot:
        plot_sweep(
            results, args.plot, title=f"Order saga, {_machine()['cpus']} cores, all on one machine"
        )
        _say(f"bench: plot written to {args.plot}")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    """Drain and steady phases against the outbox relay; a stack it started, it stops."""
    from saga_harness.bench.relay import RelayBenchConfig, default_steady_warmup, run_relay_bench
    from saga_harness.bench.relay_process import parse_overrides
    from saga_harness.bench.render import relay_summary
    from saga_harness.bench.spawn import bench_stack
    from saga_runtime import LogSettings, configure_logging

    if args.against is not None:
        from saga_harness.bench.versus_cli import cmd_versus

        return cmd_versus(args)
    try:
        overrides = parse_overrides(args.set or [])
    except ValueError as exc:
        print(f"sagactl bench relay: {exc}", file=sys.stderr)
        return 2
    if args.batch_size:
        overrides["RELAY_BATCH_SIZE"] = str(args.batch_size)
    stack = bench_stack(args.state_dir)
    # A stack somebody else started (another bench, --keep-infra) is left running.
    already_running = all(stack.status().values())
    phases = ("drain", "steady") if args.only is None else (args.only,)
    config = RelayBenchConfig(
        phases=phases,
        rows=args.rows,
        rate=args.rate,
        duration=args.duration,
        warmup=(
            args.warmup
            if args.warmup is not None
            else default_steady_warmup(stack_was_running=already_running, phases=phases)
        ),
        writers=args.writers or 4,
        aggregates=args.aggregates,
        partitions=args.partitions,
        relay_mode=args.relay,
        overrides=tuple(overrides.items()),
        seed=args.seed,
        timeout=args.timeout,
        profile=args.py_spy,
        samples=args.samples,
    )
    # The runtime's own lines (the writers' pool, a relay thread) go to stderr, warnings only.
    configure_logging(LogSettings(level="WARNING"))
    _interrupt_on_sigterm()
    log_dir = args.state_dir / "bench" / f"relay-{int(time.time())}"
    try:
        addresses = stack.ensure()
        _say(f"bench relay: stack up (kafka {addresses.kafka_bootstrap}); logs in {log_dir}")
        result = run_relay_bench(
            config,
            admin_database_url=addresses.admin_database_url,
            kafka_bootstrap=addresses.kafka_bootstrap,
            log_dir=log_dir,
            progress=_say,
        )
    finally:
        if not args.keep_infra and not already_running:
            stack.stop()
    result["machine"] = _machine()
    _say(relay_summary(result))
    _write(result, args.json)
    return 0


def _warmup_seconds(args: argparse.Namespace, stack: Any) -> float:
    """``--warmup-load``, else 45 s if this command is about to start the stack itself."""
    from saga_harness.bench.warmup import default_warmup_seconds

    if args.warmup_load is not None:
        return float(args.warmup_load)
    return default_warmup_seconds(all(stack.status().values()))


def _warm_up(system: Any, seconds: float) -> dict[str, Any]:
    from saga_harness.bench.warmup import WARMUP_RATE, warm_up

    return warm_up(
        system.orders_url,
        seconds=seconds,
        rate=WARMUP_RATE,
        progress=_say,
        authorize=_customer_of(system),
    )


REPORTED_PREFIXES = (
    "SHIPMENTS_",
    "ORDERS_",
    "RELAY_",
    "CONSUMER_",
    "DATABASE_POOL",
    "PAYMENTS_",
    "NOTIFICATIONS_",
    "EFFECTS_",
    "PROVIDER_LATENCY",
)


def reported_env(env: dict[str, str]) -> dict[str, str]:
    """The system's settings a result records: tuning knobs, never an address or a secret."""
    return {
        k: v
        for k, v in env.items()
        if k.startswith(REPORTED_PREFIXES) and "URL" not in k and not _is_secret(k)
    }


def _is_secret(name: str) -> bool:
    """A variable whose value must stay out of the JSON (a key, a secret, a password)."""
    return any(word in name for word in ("KEY", "SECRET", "PASSWORD", "TOKEN"))


def _customer_of(system: Any) -> Any:
    """Each order's headers: the bearer token of the customer it names."""
    return lambda body: system.tokens.customer(body["customer_id"])


def _one_run(system: Any, stack: Any, config: Any, log_dir: Path, *, audit: bool) -> dict[str, Any]:
    from saga_harness.bench.saga import run_saga_bench
    from saga_harness.bench.spawn import HARNESS_LABELS, cpu_targets

    what = (
        f"{config.clients} closed-loop clients"
        if config.mode == "closed"
        else f"{config.rate:g} orders/s"
    )
    _say(f"bench: {what} for {config.duration:g}s (logs in {log_dir})")
    result = run_saga_bench(
        config,
        orders_url=system.orders_url,
        database_url=system.database_url,
        kafka=system.kafka,
        cpu_targets=cpu_targets(system, stack),
        harness_labels=HARNESS_LABELS,
        progress=_say,
        authorize=_customer_of(system),
    )
    result["machine"] = _machine()
    result["system_env"] = reported_env(system.env)
    if audit:
        _say("bench: waiting for every saga to settle, then auditing (sagactl audit's rules)")
        result["violations"] = [str(v) for v in system.wait_quiet(timeout=120)][:20]
    return result


def register(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmarks (a system and a stack of their own)")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="KIND")

    saga = kinds.add_parser(
        "saga",
        help="drive orders over REST (open loop at --rate, or closed loop with --clients)",
    )
    saga.add_argument("--rate", type=float, default=100.0, help="orders per second (open loop)")
    saga.add_argument(
        "--clients", type=int, help="closed loop: this many clients, each waiting for its saga"
    )
    saga.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    saga.add_argument("--warmup", type=float, default=5.0, help="seconds left out of the figures")
    saga.add_argument("--seed", type=int, default=1)
    saga.add_argument(
        "--warmup-load",
        type=float,
        metavar="SECONDS",
        help="unmeasured orders (20/s) before measuring (default: 45 if this command starts"
        " the stack, 0 if it is already running)",
    )
    saga.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    saga.add_argument(
        "--no-audit", dest="audit", action="store_false", help="skip the invariant audit"
    )
    saga.add_argument("--keep-infra", action="store_true", help="leave the bench stack running")
    saga.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the system under test, e.g. SHIPMENTS_BOOKING_SECONDS=2 (repeatable)",
    )
    saga.set_defaults(func=cmd_saga)

    sweep = kinds.add_parser(
        "sweep", help="open loop at several rates on one system: latency against rate, and a plot"
    )
    sweep.add_argument("--rates", default="25,50,100,150,200", help="comma-separated orders/s")
    sweep.add_argument("--duration", type=float, default=30.0, help="seconds of load per rate")
    sweep.add_argument("--warmup", type=float, default=5.0, help="seconds left out per rate")
    sweep.add_argument("--seed", type=int, default=1)
    sweep.add_argument(
        "--warmup-load",
        type=float,
        metavar="SECONDS",
        help="unmeasured orders (20/s) before measuring (default: 45 if this command starts"
        " the stack, 0 if it is already running)",
    )
    sweep.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    sweep.add_argument("--plot", type=Path, help="write the latency-versus-rate PNG here")
    sweep.add_argument("--no-audit", dest="audit", action="store_false", help="skip the audit")
    sweep.add_argument("--keep-infra", action="store_true", help="leave the bench stack running")
    sweep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the system under test, e.g. SHIPMENTS_BOOKING_SECONDS=2 (repeatable)",
    )
    sweep.set_defaults(func=cmd_sweep)

    add_relay_parser(kinds)


def add_relay_parser(kinds: Any) -> argparse.ArgumentParser:
    """Add ``relay`` to ``sagactl bench``'s subcommands (``kinds``: its subparsers)."""
    from saga_harness.bench.relay_figures import DRAIN_TARGET_PER_S, STEADY_P99_TARGET_MS

    relay: argparse.ArgumentParser = kinds.add_parser(
        "relay",
        help="outbox relay: drain rate of a backlog, and commit-to-ack latency at a steady rate",
        description=(
            "Drain: write --rows outbox rows, start the relay, time until the last is marked "
            f"published (target {DRAIN_TARGET_PER_S:,.0f} events/s). Steady: commit --rate "
            "events/s through the real write path for --duration seconds; commit-to-ack is the "
            f"broker's append time minus the commit time (target p99 {STEADY_P99_TARGET_MS:g} "
            "ms). Runs on the bench stack (SAGA_BENCH_PG_PORT, SAGA_BENCH_KAFKA_PORT), started "
            "if need be, each phase with a database and a topic of its own."
        ),
    )
    relay.add_argument("--only", choices=("drain", "steady"), help="run one phase (default: both)")
    relay.add_argument("--rows", type=int, default=100_000, help="drain: rows written first")
    relay.add_argument("--rate", type=float, default=1000.0, help="steady: events per second")
    relay.add_argument("--duration", type=float, default=30.0, help="steady: seconds of load")
    relay.add_argument(
        "--warmup",
        type=float,
        help="steady: seconds left out of the figures (default 2; 15 when the steady phase"
        " would meet a broker this command just started)",
    )
    relay.add_argument(
        "--writers",
        type=int,
        help="steady: writer threads, one transaction each (default 4; with --against, 4 or"
        " one per 125 events/s of the rate, whichever is more)",
    )
    relay.add_argument(
        "--aggregates", type=int, default=10_000, help="distinct aggregate ids (Kafka keys)"
    )
    relay.add_argument("--partitions", type=int, default=3, help="partitions of the topic")
    relay.add_argument(
        "--relay",
        choices=("process", "thread"),
        default="process",
        help="run the relay as `python -m outbox_relay` (default) or as a thread in here",
    )
    relay.add_argument(
        "--batch-size", type=int, help="RELAY_BATCH_SIZE for this run (default: the setting)"
    )
    relay.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="a RELAY_* or KAFKA_CLIENT_CONFIG setting for the relay (repeatable)",
    )
    relay.add_argument(
        "--py-spy",
        type=Path,
        metavar="PATH",
        help="profile the relay with py-spy into PATH-<phase>.<ext> (.svg, .json or .txt)",
    )
    relay.add_argument(
        "--samples",
        type=Path,
        metavar="CSV",
        help="steady: write every event's commit, append and mark times (epoch s) here",
    )
    relay.add_argument("--seed", type=int, default=1)
    relay.add_argument(
        "--timeout", type=float, default=600.0, help="drain: give up after this many seconds"
    )
    relay.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    relay.add_argument("--keep-infra", action="store_true", help="leave the bench stack running")
    from saga_harness.bench.versus_cli import add_versus_arguments

    add_versus_arguments(relay)
    relay.set_defaults(func=cmd_relay)
    return relay
