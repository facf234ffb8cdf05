"""``sagactl top``: the system's health, live, from Prometheus or the processes' /metrics."""

from __future__ import annotations

import argparse
import time
from typing import Protocol

from rich.live import Live

from saga_system import SYSTEM
from sagactl.ops.commands.common import HelpFormatter, json_option, run
from sagactl.ops.errors import OperationFailed, Refusal
from sagactl.ops.render import Output
from sagactl.top import (
    DEV_UP_TARGETS,
    PrometheusError,
    PrometheusSource,
    PrometheusUnreachable,
    Readings,
    ScrapeSource,
    ScrapeUnanswered,
    Snapshot,
    build_snapshot,
    default_prometheus_url,
    frame,
    parse_target,
)

__all__ = ["register"]


class Source(Protocol):
    @property
    def description(self) -> str: ...

    def read(self, interval: float) -> Readings: ...

    def close(self) -> None: ...


def _target(text: str) -> tuple[str, str]:
    try:
        return parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    top = sub.add_parser(
        "top",
        parents=[json_option()],
        help="a live view of the system: sagas/s, latency, backlog per hop, dead letters",
        description="Shows, refreshed every --interval seconds: sagas finished per second by\n"
        "final state, end-to-end p50/p99, each service's outbox backlog (rows, oldest row,\n"
        "active relay, publish p99) and consumers (applied/s, lag per topic, dead letters),\n"
        "stuck orders and the calls to the outside world (calls/s, share failed or retried).\n\n"
        "Reads Prometheus's HTTP API (--prometheus, else $PROMETHEUS_URL or ./dev up's\n"
        "http://127.0.0.1:9190 when it answers); otherwise scrapes the processes' /metrics\n"
        "(--metrics, else ./dev up's addresses) and computes rates from two scrapes.\n"
        "— marks a number no metric gives (its process is not read, or counted nothing yet).",
        epilog="examples:\n  sagactl top\n  sagactl top --prometheus http://prometheus:9090\n"
        "  sagactl top --metrics orders=10.0.0.5:8000 relay-a=10.0.0.6:9030\n"
        "  sagactl top --json | jq .outboxes.orders.pending_rows",
        formatter_class=HelpFormatter,
    )
    top.add_argument(
        "--prometheus", metavar="URL", help="Prometheus's base URL (must answer when given)"
    )
    top.add_argument(
        "--metrics",
        metavar="[NAME=]HOST:PORT",
        nargs="+",
        type=_target,
        help="scrape these processes' /metrics instead of asking Prometheus",
    )
    top.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_interval,
        default=2.0,
        help="refresh every SECONDS; scraping, also the window of the rates (default: 2)",
    )
    top.add_argument(
        "--once", action="store_true", help="print one frame and exit (--json implies it)"
    )
    top.set_defaults(func=run(cmd_top))


def choose_source(args: argparse.Namespace, out: Output) -> Source:
    """--metrics, else --prometheus (which must answer), else Prometheus at its default URL
    if it answers, else ./dev up's /metrics addresses."""
    if args.metrics:
        return ScrapeSource(dict(args.metrics))
    if args.prometheus:
        explicit = PrometheusSource(args.prometheus)
        if not explicit.reachable():
            raise Refusal(
                f"Prometheus does not answer at {explicit.url}",
                "check the URL, or leave --prometheus out to scrape the processes' /metrics",
            )
        return explicit
    default = PrometheusSource(default_prometheus_url(), timeout=1.0)
    if default.reachable():
        return default
    default.close()
    out.note(f"no Prometheus at {default.url}: scraping the processes' /metrics")
    return ScrapeSource(DEV_UP_TARGETS)


def read(source: Source, interval: float) -> Snapshot:
    """One snapshot; a source that does not answer is a refusal (exit 2), one that answers
    wrongly a failure (exit 1)."""
    try:
        readings = source.read(interval)
    except (ScrapeUnanswered, PrometheusUnreachable) as exc:
        raise Refusal(
            str(exc),
            "start the system (./dev up), or name the endpoints: --metrics HOST:PORT ... "
            "or --prometheus URL",
        ) from exc
    except PrometheusError as exc:
        raise OperationFailed(str(exc)) from exc
    return build_snapshot(
        readings,
        source=source.description,
        outboxes=SYSTEM.outboxes(),
        consumers=SYSTEM.consumers(),
    )


def cmd_top(args: argparse.Namespace, out: Output) -> int:
    source = choose_source(args, out)
    try:
        snapshot = read(source, args.interval)
        if args.json:
            out.emit(snapshot.as_json())
            return 0
        if args.once:
            out.stdout.print(frame(snapshot))
            return 0
        return _live(source, snapshot, args.interval, out)
    finally:
        source.close()


def _live(source: Source, snapshot: Snapshot, interval: float, out: Output) -> int:
    """Refresh until Ctrl-C; a source that stops answering leaves the last frame, marked."""
    with Live(frame(snapshot), console=out.stdout, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                try:
                    snapshot = read(source, interval)
                    live.update(frame(snapshot), refresh=True)
                except (Refusal, OperationFailed) as exc:
                    live.update(frame(snapshot, error=exc.message), refresh=True)
        except KeyboardInterrupt:
            return 0
