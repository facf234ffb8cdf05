"""Replaying outbox rows: back to pending, the relay woken, the change audited.

A replay puts rows back to pending and wakes the relay, which republishes them with all its
guarantees (idempotent producer, id order, marked only after the ack). The events keep their
event id, so a consumer that already applied one finds it in its inbox and does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from saga_runtime import notify_channel
from sagactl.ops.audit_log import Change, record
from sagactl.ops.outbox import COLUMNS, OutboxFilter, OutboxRow, select_rows

__all__ = ["ReplayPlan", "WaitResult", "apply_replay", "plan_replay", "wait_until_relayed"]


@dataclass
class ReplayPlan:
    service: str
    rows: list[OutboxRow] = field(default_factory=list)  # published or failed: re-sent
    skipped: list[OutboxRow] = field(default_factory=list)  # already pending: sent anyway


def _plan(service: str, rows: list[OutboxRow]) -> ReplayPlan:
    plan = ReplayPlan(service)
    for row in rows:
        (plan.skipped if row.state == "pending" else plan.rows).append(row)
    return plan


def plan_replay(conn: psycopg.Connection, service: str, flt: OutboxFilter) -> ReplayPlan:
    return _plan(service, select_rows(conn, [service], flt, newest_first=False))


def apply_replay(
    conn: psycopg.Connection,
    service: str,
    flt: OutboxFilter,
    *,
    check: Callable[[ReplayPlan], None],
    change: Callable[[ReplayPlan], Change],
) -> tuple[ReplayPlan, int]:
    """Reset the selected rows to pending, wake the relay and record it, in one transaction.

    The rows are locked and selected again inside the transaction, so what is recorded is
    exactly what was reset; ``check`` may refuse (rolling everything back).
    """
    where, params = flt.where()
    with conn.transaction():
        locked = conn.execute(
            sql.SQL(
                "SELECT {s}::text, {c} FROM {t}.outbox WHERE {w} ORDER BY id FOR UPDATE"
            ).format(
                s=sql.Literal(service), c=sql.SQL(COLUMNS), t=sql.Identifier(service), w=where
            ),
            params,
        ).fetchall()
        plan = _plan(service, [OutboxRow(*r) for r in locked])
        check(plan)
        conn.execute(
            sql.SQL(
                "UPDATE {}.outbox SET published_at = NULL, failed_at = NULL, last_error = NULL"
                " WHERE id = ANY(%s)"
            ).format(sql.Identifier(service)),
            ([r.id for r in plan.rows],),
        )
        # Delivered at commit, like the outbox writer's own notification.
        conn.execute("SELECT pg_notify(%s, '')", (notify_channel(service),))
        audit_id = record(conn, change(plan))
    return plan, audit_id


@dataclass
class WaitResult:
    published: list[int] = field(default_factory=list)
    failed: list[tuple[int, str | None]] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)


def wait_until_relayed(
    conn: psycopg.Connection,
    service: str,
    ids: Sequence[int],
    *,
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
    poll_interval: float = 0.25,
) -> WaitResult:
    """Until the relay has published (or failed) every row, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    query = sql.SQL(
        "SELECT id, published_at IS NOT NULL, failed_at IS NOT NULL, last_error"
        " FROM {}.outbox WHERE id = ANY(%s)"
    ).format(sql.Identifier(service))
    while True:
        result = WaitResult()
        for row_id, published, failed, error in conn.execute(query, (list(ids),)):
            if published:
                result.published.append(row_id)
            elif failed:
                result.failed.append((row_id, error))
            else:
                result.pending.append(row_id)
        if on_progress is not None:
            on_progress(len(result.published) + len(result.failed))
        if not result.pending or time.monotonic() >= deadline:
            return result
        time.sleep(poll_interval)
