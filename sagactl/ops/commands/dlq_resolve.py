"""``sagactl dlq redrive|discard``: send letters back to their topic, or give up on them."""

from __future__ import annotations

import argparse
from typing import Any

from sagactl.ops import dead_letters
from sagactl.ops.audit_log import Change, command_line
from sagactl.ops.commands.common import actor_of, require_reason
from sagactl.ops.commands.dlq_inspect import no_letter
from sagactl.ops.connection import check_topics, kafka_settings, open_database, require_audit_log
from sagactl.ops.dead_letters import DeadLetterRow, RedriveOutcome
from sagactl.ops.errors import OperationFailed, Refusal
from sagactl.ops.producer import AckingProducer
from sagactl.ops.render import Output

__all__ = ["cmd_discard", "cmd_redrive"]


def _select(
    conn: Any, args: argparse.Namespace, *, ids: list[int], all_pending: bool
) -> tuple[list[DeadLetterRow], list[DeadLetterRow]]:
    """(pending letters to act on, letters asked for that are not pending); refuses when the
    selection names unknown letters or nothing pending."""
    found, missing = dead_letters.select_letters(
        conn, args.service, ids=ids, all_pending=all_pending
    )
    if missing:
        raise no_letter(args.service, missing)
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
