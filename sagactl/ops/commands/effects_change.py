"""``sagactl effects retry|abandon``: dry run first, then locked, checked and audited."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

import psycopg

from sagactl.ops.audit_log import Change, command_line
from sagactl.ops.commands.common import actor_of, require_reason
from sagactl.ops.commands.effects_inspect import (
    COLUMNS,
    describe_selection,
    effect_filter,
    no_effect,
    require_effects_table,
    row_cells,
)
from sagactl.ops.connection import open_database, require_audit_log
from sagactl.ops.effects import EffectFilter
from sagactl.ops.effects_change import (
    ABANDON,
    RETRY,
    Action,
    ChangePlan,
    apply_change,
    becomes,
    plan_change,
)
from sagactl.ops.errors import Refusal
from sagactl.ops.parsing import format_age
from sagactl.ops.render import Output

__all__ = ["cmd_abandon", "cmd_retry"]


def _selection(args: argparse.Namespace, action: Action) -> EffectFilter:
    """Ids, or a status (with a kind or an order): never every effect by accident."""
    flt = effect_filter(args)
    by_filter = bool(flt.statuses or flt.kind or flt.order_id)
    if bool(flt.ids) == by_filter:
        raise Refusal(
            f"say which effects to {action.name}: either ids or --status (with --kind, --order)",
            f"e.g. `sagactl effects {action.name} --service {args.service} 12 13` or "
            f"`sagactl effects {action.name} --service {args.service} --kind charge "
            "--status failed`",
        )
    if by_filter:
        if not flt.statuses:
            raise Refusal(
                f"--kind and --order select effects of every status: add --status "
                f"({' or '.join(action.applies_to)})"
            )
        wrong = [s for s in flt.statuses if s not in action.applies_to]
        if wrong:
            raise Refusal(
                f"{action.name} does not apply to {', '.join(wrong)} effects, only to "
                f"{' and '.join(action.applies_to)} ones",
                f"use --status {','.join(action.applies_to)}",
            )
    return flt


def _check(plan: ChangePlan, flt: EffectFilter) -> None:
    """Refuse the whole change unless every selected effect can take it."""
    if plan.missing:
        raise no_effect(plan.service, plan.missing)
    if plan.refused:
        reasons = "; ".join(f"{r.id} is {r.status}: {plan.why_not(r)}" for r in plan.refused)
        raise Refusal(
            f"cannot {plan.action.name} in {plan.service}: {reasons}",
            f"{plan.action.name} takes only {' or '.join(plan.action.applies_to)} effects; "
            "leave the others out",
        )
    if plan.running_after:
        pairs = ", ".join(f"{a} (its order's {b} is running)" for a, b in plan.running_after)
        raise Refusal(
            f"cannot retry {pairs}: it would run alongside a later effect of the same order",
            "wait until the running effect has its outcome, then retry",
        )
    if not plan.effects:
        raise Refusal(
            f"no effects match {describe_selection(plan.service, flt)}",
            f"check the selection with `sagactl effects list --service {plan.service}` and "
            "the same filters",
        )


def _dry_run(plan: ChangePlan, out: Output, extra: dict[str, Any], notes: list[str]) -> int:
    out.emit(
        {
            "dry_run": True,
            "service": plan.service,
            f"would_{plan.action.name}": [r.as_dict() for r in plan.effects],
            **extra,
        }
    )
    outcomes = ", ".join(sorted({becomes(plan.action, r.status) for r in plan.effects}))
    out.table(
        COLUMNS,
        [row_cells(r) for r in plan.effects],
        title=f"would {plan.action.name} {len(plan.effects)} {plan.service} effects "
        f"(they become {outcomes})",
        widths={"error": 80},
    )
    for note in notes:
        out.note(note)
    out.note(
        f"dry run: nothing changed. Add --yes --reason TEXT to {plan.action.name} these effects."
    )
    return 0


def _apply(
    conn: psycopg.Connection,
    args: argparse.Namespace,
    out: Output,
    flt: EffectFilter,
    action: Action,
    *,
    deadline: timedelta | None = None,
) -> int:
    actor = actor_of(args)

    def change(done: ChangePlan) -> Change:
        target: dict[str, Any] = {
            "filter": flt.describe(),
            "effects": [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "order_id": r.aggregate_id,
                    "idempotency_key": r.idempotency_key,
                    "was": r.status,
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                }
                for r in done.effects
            ],
        }
        if deadline is not None:
            target["deadline_s"] = deadline.total_seconds()
        return Change(
            actor=actor,
            action=f"effects.{action.name}",
            service=args.service,
            reason=args.reason,
            target=target,
            command=command_line(args.argv),
        )

    plan, audit_id = apply_change(
        conn,
        args.service,
        flt,
        action,
        deadline=deadline,
        check=lambda p: _check(p, flt),
        change=change,
    )
    ids = [r.id for r in plan.effects]
    out.line(
        f"{action.becomes}: {args.service} effects {', '.join(map(str, ids))} "
        f"(audit entry {audit_id})",
        style="green",
    )
    out.emit(
        {
            "dry_run": False,
            "service": args.service,
            action.becomes: [
                r.as_dict() | {"status": becomes(action, r.status)} for r in plan.effects
            ],
            "was": {str(r.id): r.status for r in plan.effects},
            "audit_id": audit_id,
        }
    )
    return 0


def cmd_retry(args: argparse.Namespace, out: Output) -> int:
    flt = _selection(args, RETRY)
    require_reason(args)
    with open_database() as conn:
        require_effects_table(conn, args.service)
        require_audit_log(conn)
        plan = plan_change(conn, args.service, flt, RETRY)
        _check(plan, flt)
        if args.yes:
            return _apply(conn, args, out, flt, RETRY, deadline=args.deadline)
    notes = [
        f"each is called again with its idempotency key (attempts from 0, deadline in "
        f"{format_age(args.deadline.total_seconds())}); the far side answers a key it has "
        "seen with its first result"
    ]
    decided = [r.id for r in plan.effects if r.status == "failed"]
    if decided:
        notes.append(
            f"the service already heard that {', '.join(map(str, decided))} failed and "
            "decided on it; it decides again on the new outcome"
        )
    return _dry_run(plan, out, {"deadline_s": args.deadline.total_seconds()}, notes)


def cmd_abandon(args: argparse.Namespace, out: Output) -> int:
    flt = _selection(args, ABANDON)
    require_reason(args)
    with open_database() as conn:
        require_effects_table(conn, args.service)
        require_audit_log(conn)
        plan = plan_change(conn, args.service, flt, ABANDON)
        _check(plan, flt)
        if args.yes:
            return _apply(conn, args, out, flt, ABANDON)
    notes = []
    unheard = [r.id for r in plan.effects if r.status == "pending"]
    if unheard:
        notes.append(
            f"nothing calls {', '.join(map(str, unheard))} again and the service never hears "
            "an outcome for them: what waits on them stays where it is until someone acts "
            "(their order's later effects run next)"
        )
    return _dry_run(plan, out, {}, notes)
