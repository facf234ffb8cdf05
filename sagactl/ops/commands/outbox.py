"""``sagactl outbox list|show|replay|purge``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from saga_runtime import RelaySettings
from sagactl.ops import outbox, outbox_purge, outbox_replay
from sagactl.ops.audit_log import Change, command_line
from sagactl.ops.commands.common import (
    HelpFormatter,
    actor_of,
    change_options,
    json_option,
    positive_int,
    purge_command,
    require_reason,
    run,
    service_name,
    service_or_all,
    services_of,
)
from sagactl.ops.connection import (
    existing_topics,
    kafka_settings,
    open_database,
    require_audit_log,
)
from sagactl.ops.errors import OperationFailed, Refusal
from sagactl.ops.outbox import OutboxFilter, OutboxRow
from sagactl.ops.outbox_replay import ReplayPlan
from sagactl.ops.parsing import format_age, parse_duration, parse_id_range, parse_ids, parse_time
from sagactl.ops.render import Output

__all__ = ["register"]

STATES_HELP = (
    "pending: not yet published (published_at and failed_at empty); published: acknowledged "
    "by the broker; failed: refused for good by the broker (the relay skips it)"
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "outbox",
        help="inspect, replay and purge the services' outboxes",
        description="The outbox rows of every service: what was published, what waits, what "
        "failed, and re-sending rows through the relay.\n\nStates: " + STATES_HELP,
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    as_json = json_option()

    lst = actions.add_parser(
        "list",
        parents=[as_json],
        help="rows, counts per state and the relay's lag",
        description="Outbox rows (newest first), then counts per state per service and the "
        "age of the oldest pending row (the relay's lag).\n\nStates: " + STATES_HELP,
        epilog="examples:\n"
        "  sagactl outbox list --state failed\n"
        "  sagactl outbox list --service orders --order 238d7afd-... --json\n"
        "  sagactl outbox list --type OrderApproved --since 2h --limit 200",
        formatter_class=HelpFormatter,
    )
    lst.add_argument("--service", type=service_or_all, default="all", help="a service or all")
    _add_filters(lst)
    lst.add_argument("--limit", type=positive_int, default=50, help="rows to show (default 50)")
    lst.set_defaults(func=run(cmd_list))

    show = actions.add_parser(
        "show",
        parents=[as_json],
        help="one row with its full envelope and who consumed it",
        formatter_class=HelpFormatter,
        epilog="example:\n  sagactl outbox show shipments 42",
    )
    show.add_argument("service", type=service_name, metavar="SERVICE")
    show.add_argument("id", type=positive_int, metavar="ID")
    show.set_defaults(func=run(cmd_show))

    replay = actions.add_parser(
        "replay",
        parents=[as_json, change_options(reason_help="why (required with --yes; audited)")],
        help="re-publish rows through the relay (dry run unless --yes)",
        description="Put the selected published or failed rows back to pending and wake the "
        "relay, which publishes them again (in id order, marked after the broker's ack). The "
        "events keep their event id: a consumer that already applied one does nothing. Rows "
        "still pending are left alone. Every replay is recorded in ops.audit_log.\n\n"
        "Replay when topic data was lost, for a new consumer, or for rows that failed to "
        "publish once the cause is fixed; not to 'fix' a consumer bug (redrive its dead "
        "letter instead) and never to re-run side effects.",
        epilog="examples:\n"
        "  sagactl outbox replay --service shipments --state failed\n"
        "  sagactl outbox replay --service orders --ids 12,13 --reason 'INC-42 topic lost' --yes\n"
        "  sagactl outbox replay --service stock --since 2026-11-21T20:00Z --until 21:00Z",
        formatter_class=HelpFormatter,
    )
    replay.add_argument("--service", type=service_name, required=True, help="whose outbox")
    _add_filters(replay)
    replay.add_argument("--ids", type=parse_ids, metavar="ID,ID", help="these row ids")
    replay.add_argument("--id-range", type=parse_id_range, metavar="A-B", help="ids A to B")
    replay.add_argument(
        "--max-rows",
        type=positive_int,
        default=10_000,
        help="refuse to replay more rows than this at once (default 10000)",
    )
    replay.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="return at once instead of waiting for the relay to publish the rows",
    )
    replay.add_argument(
        "--wait-timeout",
        type=parse_duration,
        default=parse_duration("60s"),
        metavar="DURATION",
        help="how long to wait for the relay (default 60s)",
    )
    replay.set_defaults(func=run(cmd_replay))

    purge = actions.add_parser(
        "purge",
        parents=[as_json, change_options(reason_help="why (optional; audited)")],
        help="delete published rows older than a cutoff (dry run unless --yes)",
        description="Delete published rows older than the cutoff. Pending and failed rows are "
        "never deleted. The relay does this by itself after RELAY_RETENTION; this is for "
        "doing it now. Audited in ops.audit_log.",
        epilog="examples:\n  sagactl outbox purge\n  sagactl outbox purge --older-than 2d --yes",
        formatter_class=HelpFormatter,
    )
    purge.add_argument("--service", type=service_or_all, default="all", help="a service or all")
    purge.add_argument(
        "--older-than",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="published more than this long ago (default: RELAY_RETENTION, 7d)",
    )
    purge.set_defaults(func=run(cmd_purge))


def _add_filters(parser: argparse.ArgumentParser) -> None:
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


def _filter(args: argparse.Namespace) -> OutboxFilter:
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


def _row_cells(row: OutboxRow) -> tuple[Any, ...]:
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
    flt = _filter(args)
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
        [_row_cells(r) for r in rows],
        title=f"outbox rows ({len(rows)} of {matched} matching, newest first)",
        widths={"error": 80},
    )
    if not rows:
        out.note(f"no outbox rows match {_describe(args.service, flt)}")
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


def _describe(service: str, flt: OutboxFilter) -> str:
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


def _plan_rows(plan: ReplayPlan) -> list[dict[str, Any]]:
    return [r.as_dict() for r in plan.rows]


def cmd_replay(args: argparse.Namespace, out: Output) -> int:
    flt = _filter(args)
    if not flt.selects_something_specific():
        raise Refusal(
            "say which rows to replay: a whole outbox is never replayed by accident",
            "add --ids, --id-range, --order, --type, --state or --since/--until",
        )
    require_reason(args)
    service = args.service
    with open_database() as conn:
        require_audit_log(conn)
        plan = outbox_replay.plan_replay(conn, service, flt)
        _check_replay(plan, args, flt)
        _check_topics(plan, out)
        active = outbox.relay_active(conn, service)
        if not args.yes:
            return _replay_dry_run(plan, args, out, relay_active=active)

        actor = actor_of(args)

        def change(done: ReplayPlan) -> Change:
            return Change(
                actor=actor,
                action="outbox.replay",
                service=service,
                reason=args.reason,
                target={
                    "filter": flt.describe(),
                    "rows": [
                        {
                            "id": r.id,
                            "event_id": r.event_id,
                            "event_type": r.event_type,
                            "order_id": r.aggregate_id,
                            "was": r.state,
                        }
                        for r in done.rows
                    ],
                    "left_pending": [r.id for r in done.skipped],
                },
                command=command_line(args.argv),
            )

        plan, audit_id = outbox_replay.apply_replay(
            conn, service, flt, check=lambda p: _check_replay(p, args, flt), change=change
        )
        ids = [r.id for r in plan.rows]
        result: dict[str, Any] = {
            "dry_run": False,
            "service": service,
            "replayed": _plan_rows(plan),
            "left_pending": [r.id for r in plan.skipped],
            "audit_id": audit_id,
            "relay_active": active,
        }
        out.table(
            ROW_COLUMNS,
            [_row_cells(r) for r in plan.rows],
            title=f"reset to pending: {len(ids)} {service} rows (audit entry {audit_id})",
            widths={"error": 80},
        )
        if not active:
            out.warn(
                f"no relay holds the {service} outbox right now: the rows are pending and "
                "will be published when one runs (`sagactl relay`, or `./dev up`)"
            )
            out.emit(result)
            return 0
        if not args.wait:
            out.emit(result)
            return 0
        with out.progress(f"relay publishing {service} rows", total=len(ids)) as bar:
            waited = outbox_replay.wait_until_relayed(
                conn,
                service,
                ids,
                timeout=args.wait_timeout.total_seconds(),
                on_progress=lambda done: bar.update(done),
            )
    result.update(
        published=waited.published,
        failed=[{"id": i, "error": e} for i, e in waited.failed],
        still_pending=waited.pending,
    )
    # On failure the one JSON document is the error, with this result as its detail.
    if waited.failed:
        for row_id, error in waited.failed:
            out.warn(f"row {row_id} failed again: {error}")
        raise OperationFailed(
            f"{len(waited.failed)} of {len(ids)} replayed rows failed to publish again "
            f"(see `sagactl outbox list --service {service} --state failed`)",
            detail=result,
        )
    if waited.pending:
        raise OperationFailed(
            f"{len(waited.pending)} of {len(ids)} replayed rows are still pending after "
            f"{format_age(args.wait_timeout.total_seconds())}: is the broker up? They stay "
            "pending and the relay keeps trying",
            detail=result,
        )
    out.line(f"the relay published all {len(waited.published)} rows", style="green")
    out.emit(result)
    return 0


def _check_replay(plan: ReplayPlan, args: argparse.Namespace, flt: OutboxFilter) -> None:
    if not plan.rows:
        pending = (
            f" ({len(plan.skipped)} matching rows are still pending: the relay sends them anyway)"
            if plan.skipped
            else ""
        )
        raise Refusal(
            f"no published or failed rows match {_describe(plan.service, flt)}{pending}",
            f"check the selection with `sagactl outbox list --service {plan.service}` "
            "and the same filters",
        )
    if len(plan.rows) > args.max_rows:
        raise Refusal(
            f"{len(plan.rows)} rows match, more than --max-rows {args.max_rows}",
            "narrow the selection, or raise --max-rows if you mean it",
        )


def _check_topics(plan: ReplayPlan, out: Output) -> None:
    """With a broker address at hand, refuse rows bound for topics that do not exist: they
    would only fail again. (The relay, not this command, publishes; without the address the
    check is skipped.)"""
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        out.note("KAFKA_BOOTSTRAP_SERVERS is not set: the rows' topics were not checked")
        return
    settings = kafka_settings()
    try:
        existing = existing_topics(settings)
    except Refusal as exc:
        out.warn(f"{exc.message}; the rows' topics were not checked")
        return
    missing = sorted({r.topic for r in plan.rows} - existing)
    if missing:
        ids = [r.id for r in plan.rows if r.topic in missing]
        raise Refusal(
            f"rows {', '.join(map(str, ids))} are bound for topics that do not exist on "
            f"{settings.bootstrap_servers}: {', '.join(repr(t) for t in missing)}; they would "
            "fail again",
            "fix the cause first (create the topic, or correct the rows' topic), then replay",
        )


def _replay_dry_run(
    plan: ReplayPlan, args: argparse.Namespace, out: Output, *, relay_active: bool
) -> int:
    out.emit(
        {
            "dry_run": True,
            "service": plan.service,
            "would_replay": _plan_rows(plan),
            "left_pending": [r.id for r in plan.skipped],
            "relay_active": relay_active,
        }
    )
    out.table(
        ROW_COLUMNS,
        [_row_cells(r) for r in plan.rows],
        title=f"would re-send {len(plan.rows)} {plan.service} rows (in id order)",
        widths={"error": 80},
    )
    if plan.skipped:
        ids = ", ".join(str(r.id) for r in plan.skipped)
        out.note(f"left alone, still pending (the relay sends them anyway): {ids}")
    if not relay_active:
        out.warn(f"no relay holds the {plan.service} outbox right now")
    out.note(
        "consumers that already applied these events skip them (same event ids, inbox); "
        "those that never saw them apply them"
    )
    out.note("dry run: nothing changed. Add --yes --reason TEXT to re-send these rows.")
    return 0


def cmd_purge(args: argparse.Namespace, out: Output) -> int:
    # 0s is a valid cutoff (everything published so far), so test for None, not falsiness.
    older_than = RelaySettings().retention if args.older_than is None else args.older_than
    return purge_command(
        args,
        out,
        older_than=older_than,
        plan=outbox_purge.plan_purge,
        purge=outbox_purge.purge,
        action="outbox.purge",
        rows_name="published rows",
        columns=("service", "published rows", "ids", "oldest published", "newest published"),
        cells=lambda p: (
            p.service,
            p.rows,
            f"{p.first_id}..{p.last_id}" if p.rows else "-",
            p.oldest_published_at,
            p.newest_published_at,
        ),
        selected="published",
        title_note="; pending and failed rows are kept",
    )
