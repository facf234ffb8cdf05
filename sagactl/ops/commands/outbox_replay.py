"""``sagactl outbox replay``: re-send rows through the relay, audited, and wait for it."""

from __future__ import annotations

import argparse
import os
from typing import Any

from sagactl.ops.audit_log import Change, command_line
from sagactl.ops.commands.common import actor_of, require_reason
from sagactl.ops.commands.outbox_inspect import (
    ROW_COLUMNS,
    describe_selection,
    outbox_filter,
    row_cells,
)
from sagactl.ops.connection import existing_topics, kafka_settings, open_database, require_audit_log
from sagactl.ops.errors import OperationFailed, Refusal
from sagactl.ops.outbox import OutboxFilter, relay_active
from sagactl.ops.outbox_replay import ReplayPlan, apply_replay, plan_replay, wait_until_relayed
from sagactl.ops.parsing import format_age
from sagactl.ops.render import Output

__all__ = ["cmd_replay"]


def _plan_rows(plan: ReplayPlan) -> list[dict[str, Any]]:
    return [r.as_dict() for r in plan.rows]


def cmd_replay(args: argparse.Namespace, out: Output) -> int:
    flt = outbox_filter(args)
    if not flt.selects_something_specific():
        raise Refusal(
            "say which rows to replay: a whole outbox is never replayed by accident",
            "add --ids, --id-range, --order, --type, --state or --since/--until",
        )
    require_reason(args)
    service = args.service
    with open_database() as conn:
        require_audit_log(conn)
        plan = plan_replay(conn, service, flt)
        _check_replay(plan, args, flt)
        _check_topics(plan, out)
        active = relay_active(conn, service)
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

        plan, audit_id = apply_replay(
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
            [row_cells(r) for r in plan.rows],
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
            waited = wait_until_relayed(
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
            f"no published or failed rows match {describe_selection(plan.service, flt)}{pending}",
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
        [row_cells(r) for r in plan.rows],
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
