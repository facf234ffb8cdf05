"""``sagactl dlq list|show|redrive|discard``."""

from __future__ import annotations

import argparse
from typing import Any

from sagactl.ops import dead_letters
from sagactl.ops.audit_log import Change, command_line
from sagactl.ops.commands.common import (
    HelpFormatter,
    actor_of,
    change_options,
    json_option,
    positive_int,
    require_reason,
    run,
    service_name,
    service_or_all,
    services_of,
)
from sagactl.ops.connection import check_topics, kafka_settings, open_database, require_audit_log
from sagactl.ops.dead_letters import DeadLetterRow, RedriveOutcome
from sagactl.ops.errors import OperationFailed, Refusal
from sagactl.ops.parsing import format_age
from sagactl.ops.producer import AckingProducer
from sagactl.ops.render import Output

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "dlq",
        help="inspect, redrive and discard dead letters",
        description="Messages a service's consumer gave up on (poison, or a handler that kept "
        "failing), kept in <service>.dead_letters with the error and the original bytes.",
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    as_json = json_option()

    lst = actions.add_parser(
        "list",
        parents=[as_json],
        help="dead letters and counts per status",
        epilog="examples:\n  sagactl dlq list --status pending\n"
        "  sagactl dlq list --service shipments --order 238d7afd-... --json",
        formatter_class=HelpFormatter,
    )
    lst.add_argument("--service", type=service_or_all, default="all", help="a service or all")
    lst.add_argument("--status", choices=dead_letters.STATUSES, help="pending, redriven, discarded")
    lst.add_argument("--order", metavar="ORDER_ID", help="letters about this order")
    lst.add_argument("--limit", type=positive_int, default=50, help="rows to show (default 50)")
    lst.set_defaults(func=run(cmd_list))

    show = actions.add_parser(
        "show",
        parents=[as_json],
        help="one letter: error, headers, original key and value",
        epilog="example:\n  sagactl dlq show shipments 3",
        formatter_class=HelpFormatter,
    )
    show.add_argument("service", type=service_name, metavar="SERVICE")
    show.add_argument("id", type=positive_int, metavar="ID")
    show.set_defaults(func=run(cmd_show))

    redrive = actions.add_parser(
        "redrive",
        parents=[as_json, change_options(reason_help="why (required with --yes; audited)")],
        help="send letters back to their source topic (dry run unless --yes)",
        description="Produce each pending letter's original key, value and headers back to "
        "its source topic, wait for the broker's ack (acks=all), then mark it redriven. "
        "Fix the cause first (deploy the fix, correct the setting): the consumer that "
        "dead-lettered it never recorded the event, so it applies the redriven copy; other "
        "consumers of the topic that already applied it skip it (same event id).\n\n"
        "Needs KAFKA_BOOTSTRAP_SERVERS (and KAFKA_CLIENT_CONFIG if the broker needs it).",
        epilog="examples:\n  sagactl dlq redrive shipments 3\n"
        "  sagactl dlq redrive shipments --all-pending --reason 'INC-7 setting fixed' --yes",
        formatter_class=HelpFormatter,
    )
    redrive.add_argument("service", type=service_name, metavar="SERVICE")
    redrive.add_argument("ids", type=positive_int, nargs="*", metavar="ID", help="letter ids")
    redrive.add_argument(
        "--all-pending", action="store_true", help="every pending letter of the service"
    )
    redrive.set_defaults(func=run(cmd_redrive))

    discard = actions.add_parser(
        "discard",
        parents=[as_json, change_options(reason_help="why (required with --yes; audited)")],
        help="give up on letters for good (dry run unless --yes)",
        description="Mark pending letters discarded: they are kept, with who discarded them "
        "and why, and never sent again.",
        epilog="example:\n  sagactl dlq discard stock 4 5 --reason 'test traffic' --yes",
        formatter_class=HelpFormatter,
    )
    discard.add_argument("service", type=service_name, metavar="SERVICE")
    discard.add_argument("ids", type=positive_int, nargs="+", metavar="ID", help="letter ids")
    discard.set_defaults(func=run(cmd_discard))


COLUMNS = ("service", "id", "status", "created", "event type", "order", "error", "source")


def _cells(row: DeadLetterRow) -> tuple[Any, ...]:
    return (
        row.service,
        row.id,
        row.status,
        row.created_at,
        row.event_type,
        row.aggregate_id,
        f"{row.error_type}: {row.error}",
        f"{row.source_topic}[{row.source_partition}]@{row.source_offset}",
    )


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    services = services_of(args.service)
    with open_database() as conn:
        rows, matched = dead_letters.list_letters(
            conn, services, status=args.status, order_id=args.order, limit=args.limit
        )
        counts = dead_letters.status_counts(conn, services)
    out.emit({"matched": matched, "rows": [r.as_dict() for r in rows], "counts": counts})
    out.table(
        COLUMNS,
        [_cells(r) for r in rows],
        title=f"dead letters ({len(rows)} of {matched} matching, newest first)",
        widths={"error": 90},
    )
    if not rows:
        out.note("no dead letters match")
    elif matched > len(rows):
        out.note(f"showing the newest {len(rows)} of {matched}: --limit N shows more")
    out.table(
        ("service", "pending", "redriven", "discarded", "oldest pending"),
        [
            (
                c["service"],
                c["pending"],
                c["redriven"],
                c["discarded"],
                format_age(c["oldest_pending_age_s"]),
            )
            for c in counts
        ],
        title="per service",
    )
    return 0


def _no_letter(service: str, ids: list[int]) -> Refusal:
    return Refusal(
        f"{service} has no dead letter {', '.join(map(str, ids))}",
        f"list them with `sagactl dlq list --service {service}`",
    )


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    with open_database() as conn:
        letter = dead_letters.get_letter(conn, args.service, args.id)
    if letter is None:
        raise _no_letter(args.service, [args.id])
    data = letter.as_dict(with_message=True)
    out.emit(data)
    out.fields(
        [
            ("status", letter.status),
            ("created", letter.created_at),
            ("event", f"{letter.event_type or '-'} {letter.event_id or ''}".strip()),
            ("order", letter.aggregate_id),
            ("source", f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"),
            ("attempts", letter.attempts),
            ("error type", letter.error_type),
            ("error", letter.error),
            ("resolved", letter.resolved_at),
            ("resolution", letter.resolution),
        ],
        title=f"{args.service} dead letter {letter.id}",
    )
    out.table(("header", "value"), [(h["key"], _shown(h)) for h in data["headers"]])
    for name in ("key", "value"):
        body = data[name]
        if body.get("json") is not None:
            out.json_block(body["json"], title=f"{name} (JSON, {body['size']} bytes)")
        elif body.get("encoding") == "utf-8":
            out.line(f"{name} (UTF-8 text, {body['size']} bytes):", style="bold")
            out.line(body["text"])
        elif body.get("encoding") == "binary":
            out.line(f"{name} (binary, {body['size']} bytes), hex:", style="bold")
            out.line(body["hex"])
            out.line(f"base64: {body['base64']}")
        else:
            out.line(f"{name}: none", style="bold")
    return 0


def _shown(header: dict[str, Any]) -> str | None:
    """A header value for people: its text when UTF-8, else its bytes in hex."""
    if "value_hex" in header:
        return f"(binary, {header['size']} bytes) hex {header['value_hex']}"
    value = header["value"]
    if value is None:
        return None
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def _select(
    conn: Any, args: argparse.Namespace, *, ids: list[int], all_pending: bool
) -> tuple[list[DeadLetterRow], list[DeadLetterRow]]:
    """(pending letters to act on, letters asked for that are not pending); refuses when the
    selection names unknown letters or nothing pending."""
    found, missing = dead_letters.select_letters(
        conn, args.service, ids=ids, all_pending=all_pending
    )
    if missing:
        raise _no_letter(args.service, missing)
    pending = [r for r in found if r.status == "pending"]
    others = [r for r in found if r.status != "pending"]
    if not pending:
        detail = "; ".join(f"{r.id} is {r.status}" for r in others) or "it has none pending"
        raise Refusal(
            f"nothing to do in {args.service}: {detail}",
            f"see `sagactl dlq list --service {args.service} --status pending`",
        )
    return pending, others


def cmd_redrive(args: argparse.Namespace, out: Output) -> int:
    if bool(args.ids) == bool(args.all_pending):
        raise Refusal(
            "say which letters to redrive: either ids or --all-pending",
            f"e.g. `sagactl dlq redrive {args.service} 3 4` or "
            f"`sagactl dlq redrive {args.service} --all-pending`",
        )
    require_reason(args)
    settings = kafka_settings()
    check_topics(settings, [])  # the broker answers, before anything else
    with open_database() as conn:
        require_audit_log(conn)
        letters, others = _select(conn, args, ids=args.ids, all_pending=args.all_pending)
        check_topics(settings, {r.source_topic for r in letters})
        prefix = settings.topic_prefix
        for topic in sorted({r.source_topic for r in letters}):
            if prefix and not topic.startswith(prefix):
                out.warn(f"{topic} does not start with KAFKA_TOPIC_PREFIX {prefix!r}")
        for r in others:
            out.note(f"left alone: letter {r.id} is {r.status}")
        out.table(
            ("id", "event type", "order", "error", "to topic", "key"),
            [
                (
                    r.id,
                    r.event_type,
                    r.aggregate_id,
                    f"{r.error_type}: {r.error}",
                    r.source_topic,
                    dead_letters.describe_bytes(r.key).get("text"),
                )
                for r in letters
            ],
            title=f"{'would redrive' if not args.yes else 'redriving'} {len(letters)} "
            f"{args.service} dead letters",
            widths={"error": 80},
        )
        if any(r.event_id is None for r in letters):
            out.warn(
                "some letters are not valid events (no event id): every consumer of the "
                "topic will meet the same bytes again, and dead-letter them again unless "
                "what made them invalid was fixed"
            )
        if not args.yes:
            out.note(
                "each goes back to its source topic with its original key, value and headers; "
                "every consumer group of that topic reads it again, and those that already "
                "applied the event skip it (inbox)"
            )
            out.note("dry run: nothing changed. Add --yes --reason TEXT to redrive them.")
            out.emit(
                {
                    "dry_run": True,
                    "service": args.service,
                    "would_redrive": [r.as_dict() for r in letters],
                    "left_alone": [{"id": r.id, "status": r.status} for r in others],
                }
            )
            return 0
        actor = actor_of(args)
        resolution = f"redriven by {actor}: {args.reason}"

        def change(letter: DeadLetterRow, partition: int, offset: int) -> Change:
            return Change(
                actor=actor,
                action="dlq.redrive",
                service=args.service,
                reason=args.reason,
                target={
                    "dead_letter_id": letter.id,
                    "event_id": letter.event_id,
                    "event_type": letter.event_type,
                    "order_id": letter.aggregate_id,
                    "topic": letter.source_topic,
                    "partition": partition,
                    "offset": offset,
                },
                command=command_line(args.argv),
            )

        outcomes: list[RedriveOutcome] = []
        producer = AckingProducer(settings)
        error: OperationFailed | None = None
        try:
            with out.progress(f"redriving {args.service} letters", total=len(letters)) as bar:
                for letter in letters:
                    try:
                        outcome = dead_letters.redrive_one(
                            conn, letter, sink=producer, resolution=resolution, change=change
                        )
                    except OperationFailed as exc:
                        # The broker refused: stop here, the rest would meet the same fate.
                        error = exc
                        break
                    outcomes.append(outcome)
                    bar.advance()
        finally:
            producer.close()
    result = {
        "dry_run": False,
        "service": args.service,
        "outcomes": [o.as_dict() for o in outcomes],
        "not_attempted": [r.id for r in letters[len(outcomes) + (1 if error else 0) :]],
    }
    out.table(
        ("id", "result", "detail", "audit entry"),
        [(o.id, o.result, o.detail, o.audit_id) for o in outcomes],
        title="redrive",
    )
    if error is not None:
        failed_id = letters[len(outcomes)].id
        result["failed"] = {"id": failed_id, "error": error.message}
        raise OperationFailed(
            f"letter {failed_id} was not redriven (it stays pending): {error.message}",
            detail=result,
        )
    out.emit(result)
    return 0


def cmd_discard(args: argparse.Namespace, out: Output) -> int:
    require_reason(args)
    with open_database() as conn:
        require_audit_log(conn)
        letters, others = _select(conn, args, ids=args.ids, all_pending=False)
        for r in others:
            out.note(f"left alone: letter {r.id} is {r.status}")
        out.table(
            ("id", "event type", "order", "error", "created"),
            [
                (r.id, r.event_type, r.aggregate_id, f"{r.error_type}: {r.error}", r.created_at)
                for r in letters
            ],
            title=f"{'would discard' if not args.yes else 'discarding'} {len(letters)} "
            f"{args.service} dead letters",
            widths={"error": 80},
        )
        if not args.yes:
            out.note("dry run: nothing changed. Add --yes --reason TEXT to discard them.")
            out.emit(
                {
                    "dry_run": True,
                    "service": args.service,
                    "would_discard": [r.as_dict() for r in letters],
                    "left_alone": [{"id": r.id, "status": r.status} for r in others],
                }
            )
            return 0
        actor = actor_of(args)

        def check(chosen: list[int], _skipped: list[tuple[int, str]]) -> None:
            if not chosen:
                raise Refusal(
                    f"nothing to discard in {args.service}: none of the letters is pending now",
                    f"see `sagactl dlq list --service {args.service}`",
                )

        def change(chosen: list[int], skipped: list[tuple[int, str]]) -> Change:
            return Change(
                actor=actor,
                action="dlq.discard",
                service=args.service,
                reason=args.reason,
                target={
                    "dead_letter_ids": chosen,
                    "left_alone": [{"id": i, "status": s} for i, s in skipped],
                    "events": [
                        {
                            "id": r.id,
                            "event_id": r.event_id,
                            "event_type": r.event_type,
                            "order_id": r.aggregate_id,
                        }
                        for r in letters
                        if r.id in chosen
                    ],
                },
                command=command_line(args.argv),
            )

        chosen, skipped, audit_id = dead_letters.discard(
            conn,
            args.service,
            [r.id for r in letters],
            resolution=f"discarded by {actor}: {args.reason}",
            check=check,
            change=change,
        )
    out.line(f"discarded {', '.join(map(str, chosen))} (audit entry {audit_id})", style="green")
    out.emit(
        {
            "dry_run": False,
            "service": args.service,
            "discarded": chosen,
            "left_alone": [{"id": i, "status": s} for i, s in skipped],
            "audit_id": audit_id,
        }
    )
    return 0
