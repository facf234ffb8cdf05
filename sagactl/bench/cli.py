"""``sagactl bench``: the saga benchmark, the relay benchmark and the latency sweep."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


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


def cmd_saga(args: argparse.Namespace) -> int:
    from sagactl.bench.render import saga_summary
    from sagactl.bench.saga import SagaBenchConfig, run_saga_bench
    from sagactl.bench.spawn import bench_stack, bench_system

    config = SagaBenchConfig(
        mode="closed" if args.clients else "open",
        rate=args.rate,
        clients=args.clients or 0,
        duration=args.duration,
        warmup=args.warmup,
        seed=args.seed,
    )
    stack = bench_stack(args.state_dir)
    log_dir = args.state_dir / "bench" / f"saga-{int(time.time())}"
    try:
        with bench_system(stack, log_dir) as system:
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
                progress=_say,
            )
            if args.audit:
                _say("bench: auditing every saga (sagactl audit's rules)")
                result["violations"] = [str(v) for v in system.audit()][:20]
    finally:
        if not args.keep_infra:
            stack.stop()
    _say(saga_summary(result))
    _write(result, args.json)
    return 0


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
    saga.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    saga.add_argument(
        "--no-audit", dest="audit", action="store_false", help="skip the invariant audit"
    )
    saga.add_argument("--keep-infra", action="store_true", help="leave the bench stack running")
    saga.set_defaults(func=cmd_saga)
