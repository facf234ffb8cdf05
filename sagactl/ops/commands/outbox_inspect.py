"""``sagactl outbox list|show``, and the row selection and columns the replay shares."""

from __future__ import annotations

import argparse
from typing import Any

from sagactl.ops import outbox
from sagactl.ops.commands.common import services_of
from sagactl.ops.connection import open_database
from sagactl.ops.errors import Refusal
from sagactl.ops.outbox import OutboxFilter, OutboxRow
from sagactl.ops.parsing import format_age, parse_time
from sagactl.ops.render import Output

__all__ = [
    "ROW_COLUMNS",
    "add_filters",
    "cmd_list",
    "cmd_show",
    "describe_selection",
    "outbox_filter",
    "row_cells",
]


def add_filters(parser: argparse.ArgumentParser) -> None:
    """The row selection ``list`` and ``replay`` share."""
    parser.add_argument("--state", choices=outbox.STATES, help="pending, published or failed")
    parser.add_argument("--order", metavar="ORDER_ID", help="rows about this order")
    parser.add_argument(
        "--type", dest="event_type", metavar="EVENT_TYPE", help="e.g. OrderApproved"
    )
    parser.add_argument(
        "--since", type=parse_time, metavar="TIME", help="created at or after (2h, ISO 8601)"
    )
    parser.add_argument(
        "--until", type=parse_time, metavar="TIME", help="created before (2h, ISO 8601)"
    )


def outbox_filter(args: argparse.Namespace) -> OutboxFilter:
    """The rows the arguments select (``add_filters``, and replay's ids)."""
    return OutboxFilter(
        state=args.state,
        order_id=args.order,
        event_type=args.event_type,
        since=args.since,
        until=args.until,
        ids=tuple(args.ids) if getattr(args, "ids", None) else None,
        id_range=getattr(args, "id_range", None),
    )


def _outcome(row: OutboxRow) -> Any:
    if row.state == "published":
        return row.published_at
    if row.state == "failed":
        return f"FAILED {row.failed_at:%Y-%m-%d %H:%M:%S}" if row.failed_at else "FAILED"
    return "pending"


ROW_COLUMNS = ("service", "id", "event type", "order", "created", "published", "attempts", "error")


def row_cells(row: OutboxRow) -> tuple[Any, ...]:
    return (
        row.service,
        row.id,
        row.event_type,
        row.aggregate_id,
        row.created_at,
        _outcome(row),
        row.attempts,
        row.last_error,
    )


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    services = services_of(args.service)
    flt = outbox_filter(args)
    with open_database() as conn:
        rows = outbox.select_rows(conn, services, flt, limit=args.limit)
        matched = outbox.count_rows(conn, services, flt) if len(rows) >= args.limit else len(rows)
        counts = outbox.state_counts(conn, services)
    out.emit(
        {
            "filter": {"service": args.service, **flt.describe()},
            "matched": matched,
            "rows": [r.as_dict() for r in rows],
            "counts": [c.as_dict() for c in counts],
        }
    )
    out.table(
        ROW_COLUMNS,
        [row_cells(r) for r in rows],
        title=f"outbox rows ({len(rows)} of {matched} matching, newest first)",
        widths={"error": 80},
    )
    if not rows:
        out.note(f"no outbox rows match {describe_selection(args.service, flt)}")
    elif matched > len(rows):
        out.note(f"showing the newest {len(rows)} of {matched}: --limit N shows more")
    out.table(
        ("service", "pending", "published", "failed", "lag (oldest pending)"),
        [
            (c.service, c.pending, c.published, c.failed, format_age(c.oldest_pending_age_s))
            for c in counts
        ],
        title="per service",
    )
    return 0


def describe_selection(service: str, flt: OutboxFilter) -> str:
    parts = [f"service={service}"] + [f"{k}={v}" for k, v in flt.describe().items()]
    return " ".join(parts)


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    with open_database() as conn:
        found = outbox.get_row(conn, args.service, args.id)
        if found is None:
            raise Refusal(
                f"{args.service} has no outbox row {args.id}",
                f"list its rows with `sagactl outbox list --service {args.service}` (published "
                "rows are purged after RELAY_RETENTION)",
            )
        row, envelope = found
        consumers = outbox.consumers_of(conn, [row.event_id], services_of("all"))
    consumed = [{"service": s, "processed_at": at} for s, _, at in consumers]
    out.emit({"row": row.as_dict(), "envelope": envelope, "consumed_by": consumed})
    out.fields(
        [(k.replace("_", " "), v) for k, v in row.as_dict().items()],
        title=f"{args.service} outbox row {row.id}",
    )
    out.table(
        ("consumed by", "processed at"),
        [(c["service"], c["processed_at"]) for c in consumed],
        title="inboxes that applied this event",
    )
    out.json_block(envelope, title="envelope")
    return 0
