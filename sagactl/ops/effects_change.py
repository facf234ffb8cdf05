"""Retrying and abandoning effects: a status change, locked, checked and audited at once.

* retry   - failed or abandoned effects go back to pending, with their attempts reset and
  a fresh deadline; the executor claims them at its next poll and calls again with the
  same idempotency key (the far side answers a repeated key with its first result).
  An undecided effect (its outcome is recorded, the service's decision on it kept
  failing) goes back to recorded: the executor makes the decision again, never the call.
* abandon - pending, failed or undecided effects become abandoned: nothing calls them or
  decides on them again.

Never a running effect: its executor holds a lease and may be in the middle of the call,
and it records the outcome only while it still holds the lease. Never a done one: its
outcome was recorded and decided on. Any other status (one this tool does not know) is
left to the executor that wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from sagactl.ops.audit_log import Change, record
from sagactl.ops.effects import COLUMNS, EffectFilter, EffectRow

__all__ = [
    "ABANDON",
    "RETRY",
    "Action",
    "ChangePlan",
    "apply_change",
    "becomes",
    "plan_change",
]


@dataclass(frozen=True)
class Action:
    name: str  # the command, and the audit action's suffix
    applies_to: tuple[str, ...]  # the statuses it changes
    becomes: str  # the status the effects get


RETRY = Action("retry", ("failed", "abandoned", "undecided"), "pending")


def becomes(action: Action, status: str) -> str:
    """The status an effect in ``status`` gets from ``action`` (a retried undecided one is
    decided again, not called again)."""
    return "recorded" if action is RETRY and status == "undecided" else action.becomes


ABANDON = Action("abandon", ("pending", "failed", "undecided"), "abandoned")

# Why each status is refused (a status not named here is one this tool does not know).
WHY_NOT = {
    "running": "an executor holds its lease and may be making the call right now; wait for "
    "its outcome (or for the lease to expire)",
    "done": "its outcome was recorded and decided on; a new call is a new request to the service",
    "pending": "it is already waiting for its next attempt",
    "abandoned": "it was abandoned already",
    "failed": "it failed already",
    "recorded": "its outcome is recorded and the executor is deciding on it",
    "undecided": "its outcome is recorded; retry makes the decision again",
}


@dataclass
class ChangePlan:
    service: str
    action: Action
    effects: list[EffectRow] = field(default_factory=list)  # to change
    refused: list[EffectRow] = field(default_factory=list)  # selected, in another status
    missing: list[int] = field(default_factory=list)  # ids the table does not have
    # (effect to retry, a later effect of its aggregate that is running): the retried one
    # would become the aggregate's head while that one is in flight, two calls at once.
    running_after: list[tuple[int, int]] = field(default_factory=list)

    def why_not(self, row: EffectRow) -> str:
        return WHY_NOT.get(row.status, f"{self.action.name} does not apply to this status")

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "action": self.action.name,
            "effects": [r.as_dict() for r in self.effects],
            "refused": [
                {"id": r.id, "status": r.status, "why": self.why_not(r)} for r in self.refused
            ],
            "missing": self.missing,
            "running_after": [{"id": a, "running": b} for a, b in self.running_after],
        }


def plan_change(
    conn: psycopg.Connection,
    service: str,
    flt: EffectFilter,
    action: Action,
    *,
    lock: bool = False,
) -> ChangePlan:
    """What ``action`` would do to the effects ``flt`` selects (``lock``: inside the
    caller's transaction, with the rows locked until it ends)."""
    table = sql.Identifier(service, "effects")
    where, params = flt.where()
    rows = conn.execute(
        sql.SQL("SELECT {s}::text, {c} FROM {t} WHERE {w} ORDER BY id {lock}").format(
            s=sql.Literal(service),
            c=sql.SQL(COLUMNS),
            t=table,
            w=where,
            lock=sql.SQL("FOR UPDATE" if lock else ""),
        ),
        params,
    ).fetchall()
    plan = ChangePlan(service, action)
    for row in [EffectRow(*r) for r in rows]:
        (plan.effects if row.status in action.applies_to else plan.refused).append(row)
    found = {r.id for r in plan.effects + plan.refused}
    plan.missing = [i for i in flt.ids if i not in found]
    if action is RETRY and plan.effects:
        plan.running_after = [
            (int(a), int(b))
            for a, b in conn.execute(
                sql.SQL(
                    "SELECT c.id, r.id FROM {t} c JOIN {t} r ON r.aggregate_id = c.aggregate_id"
                    " AND r.id > c.id AND r.status = 'running' WHERE c.id = ANY(%s)"
                    " ORDER BY c.id, r.id"
                ).format(t=table),
                ([r.id for r in plan.effects],),
            )
        ]
    return plan


def _update(service: str, action: Action) -> sql.Composed:
    table = sql.Identifier(service, "effects")
    if action is RETRY:
        # A fresh start: no attempts, due now, a new deadline. The last error stays
        # until the next attempt replaces it (the audit entry keeps it anyway).
        # An undecided effect keeps its outcome and only the decision runs again: the
        # outside world already answered, and must not be asked twice.
        return sql.SQL(
            "UPDATE {t} SET"
            " status = CASE WHEN status = 'undecided' THEN 'recorded' ELSE 'pending' END,"
            " attempts = CASE WHEN status = 'undecided' THEN attempts ELSE 0 END,"
            " deadline_at = CASE WHEN status = 'undecided' THEN deadline_at"
            " ELSE now() + %(deadline)s END,"
            " outcome = CASE WHEN status = 'undecided' THEN outcome END,"
            " next_attempt_at = now(), lease_owner = NULL, lease_until = NULL,"
            " updated_at = now() WHERE id = ANY(%(ids)s) AND status = ANY(%(from)s)"
        ).format(t=table)
    return sql.SQL(
        "UPDATE {t} SET status = %(to)s, lease_owner = NULL, lease_until = NULL,"
        " updated_at = now() WHERE id = ANY(%(ids)s) AND status = ANY(%(from)s)"
    ).format(t=table)


def apply_change(
    conn: psycopg.Connection,
    service: str,
    flt: EffectFilter,
    action: Action,
    *,
    deadline: timedelta | None = None,
    check: Callable[[ChangePlan], None],
    change: Callable[[ChangePlan], Change],
) -> tuple[ChangePlan, int]:
    """Change the selected effects and record it, in one transaction.

    The rows are locked and planned again inside the transaction, so what is recorded is
    exactly what changed, and an effect an executor claimed since the dry run is refused
    (``check`` sees it as running, and refusing rolls everything back).
    """
    with conn.transaction():
        plan = plan_change(conn, service, flt, action, lock=True)
        check(plan)
        updated = conn.execute(
            _update(service, action),
            {
                "ids": [r.id for r in plan.effects],
                "from": list(action.applies_to),
                "to": action.becomes,
                "deadline": deadline,
            },
        )
        assert updated.rowcount == len(plan.effects)  # locked above, so none moved meanwhile
        audit_id = record(conn, change(plan))
    return plan, audit_id
