"""``sagactl saga trace|stuck``."""

from __future__ import annotations

import argparse
from typing import Any

from sagactl.ops import saga
from sagactl.ops.commands.common import HelpFormatter, json_option, positive_int, run
from sagactl.ops.connection import open_database
from sagactl.ops.errors import Refusal
from sagactl.ops.parsing import format_age, parse_duration
from sagactl.ops.render import Output

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "saga",
        help="follow one order across the services; find orders that stopped",
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(dest="saga_command", required=True, metavar="ACTION")
    as_json = json_option()

    trace = actions.add_parser(
        "trace",
        parents=[as_json],
        help="every event one order caused, who consumed it, and each hop's latency",
        description="The order's whole timeline across services: every event emitted (outbox "
        "rows with the order as aggregate, in every service), every consumption (the inbox "
        "rows of those events) and every dead letter, in time order. Latencies: publish = "
        "published_at - created_at; hop = the consumer's processed_at - the emitting row's "
        "created_at. Outbox rows are purged after RELAY_RETENTION; older orders show the "
        "orders timeline only.",
        epilog="example:\n  sagactl saga trace 238d7afd-c2b3-4b46-888f-a1f5de6654da",
        formatter_class=HelpFormatter,
    )
    trace.add_argument("order_id", metavar="ORDER_ID")
    trace.set_defaults(func=run(cmd_trace))

    stuck = actions.add_parser(
        "stuck",
        parents=[as_json],
        help="orders neither SHIPPED nor CANCELLED after a while, and where they stopped",
        epilog="examples:\n  sagactl saga stuck\n  sagactl saga stuck --older-than 10m --json",
        formatter_class=HelpFormatter,
    )
    stuck.add_argument(
        "--older-than",
        type=parse_duration,
        default=parse_duration("60s"),
        metavar="DURATION",
        help="created more than this long ago (default 60s)",
    )
    stuck.add_argument("--limit", type=positive_int, default=100, help="orders to show (100)")
    stuck.set_defaults(func=run(cmd_stuck))


def _what(step: saga.TraceStep) -> str:
    if step.kind == "emitted":
        return f"{step.service} emitted {step.event_type}"
    if step.kind == "consumed":
        return f"{step.service} applied {step.event_type} (from {step.from_service or '?'})"
    return f"{step.service} dead-lettered {step.event_type or 'a message'} ({step.state})"


def _latency(step: saga.TraceStep) -> str:
    if step.kind == "emitted":
        if step.state == "published":
            return f"published in {format_age((step.latency_ms or 0) / 1000)}"
        return step.state or "-"
    if step.kind == "consumed" and step.latency_ms is not None:
        return f"hop {format_age(step.latency_ms / 1000)}"
    return "-"


def cmd_trace(args: argparse.Namespace, out: Output) -> int:
    with open_database() as conn:
        data = saga.load_trace(conn, args.order_id)
    if not data.found:
        raise Refusal(
            f"no service knows order {args.order_id}",
            "check the id (`sagactl saga stuck` lists unfinished orders; "
            "GET /orders?customer_id=... finds a customer's orders)",
        )
    steps = saga.build_steps(data)
    start = steps[0].at if steps else None
    summary: dict[str, Any] = {
        "events": len(data.emitted),
        "consumptions": len(data.consumed),
        "unpublished": sum(1 for e in data.emitted if e.state != "published"),
        "dead_letters_pending": sum(1 for d in data.dead_letters if d.status == "pending"),
        "duration_ms": round((steps[-1].at - start).total_seconds() * 1000, 1)
        if steps and start
        else None,
    }
    out.emit(
        {
            "order_id": args.order_id,
            "order": data.order,
            "trace_id": data.trace_ids[0] if data.trace_ids else None,
            "trace_ids": data.trace_ids,
            "steps": [s.as_dict() for s in steps],
            "timeline": data.timeline,
            "summary": summary,
        }
    )
    if data.order:
        order = data.order
        out.line(
            f"order {args.order_id}: {order['status']}"
            + (f" ({order['reason_code']}: {order['reason']})" if order["reason_code"] else "")
            + f", created {order['created_at']:%Y-%m-%d %H:%M:%S.%f}"[:-3]
            + " UTC",
            style="bold",
        )
    if data.trace_ids:
        out.line(f"trace {', '.join(data.trace_ids)}")
    out.table(
        ("at", "+", "what", "latency", "event id", "detail"),
        [
            (
                s.at,
                f"+{format_age((s.at - start).total_seconds())}" if start else "-",
                _what(s),
                _latency(s),
                str(s.event_id)[:8] if s.event_id else "-",
                s.detail,
            )
            for s in steps
        ],
        widths={"detail": 80},
    )
    if not data.emitted and data.timeline:
        out.note("no outbox rows left (purged after RELAY_RETENTION): the orders timeline says")
        out.table(
            ("occurred", "producer", "event"),
            [(t["occurred_at"], t["producer"], t["event_type"]) for t in data.timeline],
        )
    out.line(
        f"{summary['events']} events, {summary['consumptions']} consumptions, "
        f"{summary['unpublished']} unpublished, {summary['dead_letters_pending']} pending "
        f"dead letters"
        + (f", {format_age(summary['duration_ms'] / 1000)} end to end" if steps else "")
    )
    return 0


def cmd_stuck(args: argparse.Namespace, out: Output) -> int:
    with open_database() as conn:
        orders, total = saga.find_stuck(conn, args.older_than, limit=args.limit)
    out.emit(
        {
            "older_than_s": args.older_than.total_seconds(),
            "total": total,
            "orders": [o.as_dict() for o in orders],
        }
    )
    out.table(
        ("order", "status", "age", "stopped at", "hint"),
        [
            (o.order_id, o.status, format_age(o.age_s), o.stopped_at, saga.hint_for(o))
            for o in orders
        ],
        title=f"orders not SHIPPED/CANCELLED after {format_age(args.older_than.total_seconds())} "
        f"({len(orders)} of {total}, oldest first)",
    )
    if not orders:
        out.note("no stuck orders")
    return 0
