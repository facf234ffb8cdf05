"""The services' outbox tables seen by an operator: rows and their states, replay, purge.

States, as the relay defines them (``saga_runtime/relay.py``):

* pending   - ``published_at IS NULL AND failed_at IS NULL``: the relay will publish it;
* published - ``published_at IS NOT NULL``: the broker acknowledged it;
* failed    - ``failed_at IS NOT NULL AND published_at IS NULL``: the broker refused it for
  good (``last_error`` says why) and the relay skips it.

A replay puts rows back to pending and wakes the relay, which republishes them with all its
guarantees (idempotent producer, id order, marked only after the ack). The events keep their
event id, so a consumer that already applied one finds it in its inbox and does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from saga_runtime import notify_channel, relay_lock_key
from sagactl.ops.audit_log import Change, record
from sagactl.ops.purge import delete_in_batches, per_service

__all__ = [
    "STATES",
    "OutboxFilter",
    "OutboxRow",
    "PurgePlan",
    "ReplayPlan",
    "ServiceCounts",
    "WaitResult",
    "apply_replay",
    "consumers_of",
    "count_rows",
    "get_row",
    "plan_purge",
    "plan_replay",
    "purge",
    "relay_active",
    "select_rows",
    "state_counts",
    "wait_until_relayed",
]

STATES = ("pending", "published", "failed")
_STATE_SQL = {
    "pending": "published_at IS NULL AND failed_at IS NULL",
    "published": "published_at IS NOT NULL",
    "failed": "failed_at IS NOT NULL AND published_at IS NULL",
}
_COLUMNS = (
    "id, event_id, event_type, aggregate_id, topic, created_at, published_at, failed_at,"
    " attempts, last_error"
)


@dataclass(frozen=True)
class OutboxFilter:
    """Which rows: every given criterion must hold."""

    state: str | None = None
    order_id: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[int, ...] | None = None
    id_range: tuple[int, int] | None = None

    def selects_something_specific(self) -> bool:
        """A replay must name its rows: a selector besides the service."""
        return any(
            v is not None
            for v in (self.state, self.order_id, self.event_type, self.since, self.until)
        ) or bool(self.ids or self.id_range)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("state", "order_id", "event_type", "since", "until"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.ids:
            out["ids"] = list(self.ids)
        if self.id_range:
            out["id_range"] = list(self.id_range)
        return out

    def where(self) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = [sql.SQL("TRUE")]
        params: list[Any] = []
        if self.state is not None:
            clauses.append(sql.SQL(_STATE_SQL[self.state]))
        if self.order_id is not None:
            clauses.append(sql.SQL("aggregate_id = %s"))
            params.append(self.order_id)
        if self.event_type is not None:
            clauses.append(sql.SQL("event_type = %s"))
            params.append(self.event_type)
        if self.since is not None:
            clauses.append(sql.SQL("created_at >= %s"))
            params.append(self.since)
        if self.until is not None:
            clauses.append(sql.SQL("created_at < %s"))
            params.append(self.until)
        if self.ids:
            clauses.append(sql.SQL("id = ANY(%s)"))
            params.append(list(self.ids))
        if self.id_range:
            clauses.append(sql.SQL("id BETWEEN %s AND %s"))
            params.extend(self.id_range)
        return sql.SQL(" AND ").join(clauses), params


@dataclass(frozen=True)
class OutboxRow:
    service: str
    id: int
    event_id: UUID
    event_type: str
    aggregate_id: str
    topic: str
    created_at: datetime
    published_at: datetime | None
    failed_at: datetime | None
    attempts: int
    last_error: str | None

    @property
    def state(self) -> str:
        if self.published_at is not None:
            return "published"
        return "failed" if self.failed_at is not None else "pending"

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "id": self.id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "order_id": self.aggregate_id,
            "topic": self.topic,
            "state": self.state,
            "created_at": self.created_at,
            "published_at": self.published_at,
            "failed_at": self.failed_at,
            "attempts": self.attempts,
            "last_error": self.last_error,
        }


def _select(service: str, flt: OutboxFilter) -> tuple[sql.Composable, list[Any]]:
    where, params = flt.where()
    query = sql.SQL("SELECT {service}::text AS service, {columns} FROM {schema}.outbox WHERE {w}")
    return (
        query.format(
            service=sql.Literal(service),
            columns=sql.SQL(_COLUMNS),
            schema=sql.Identifier(service),
            w=where,
        ),
        params,
    )


def select_rows(
    conn: psycopg.Connection,
    services: Sequence[str],
    flt: OutboxFilter,
    *,
    limit: int | None = None,
    newest_first: bool = True,
) -> list[OutboxRow]:
    parts, params = [], []
    for service in services:
        part, part_params = _select(service, flt)
        parts.append(part)
        params.extend(part_params)
    order = "created_at DESC, id DESC" if newest_first else "created_at, id"
    query = sql.SQL("SELECT * FROM ({u}) AS selected ORDER BY {o}").format(
        u=sql.SQL(" UNION ALL ").join(parts), o=sql.SQL(order)
    )
    if limit is not None:
        query = sql.SQL("{} LIMIT %s").format(query)
        params.append(limit)
    return [OutboxRow(*r) for r in conn.execute(query, params).fetchall()]


def count_rows(conn: psycopg.Connection, services: Sequence[str], flt: OutboxFilter) -> int:
    total = 0
    for service in services:
        where, params = flt.where()
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.outbox WHERE {}").format(
                sql.Identifier(service), where
            ),
            params,
        ).fetchone()
        total += int(row[0]) if row else 0
    return total


@dataclass(frozen=True)
class ServiceCounts:
    service: str
    pending: int
    published: int
    failed: int
    oldest_pending_age_s: float | None  # the relay's lag

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "pending": self.pending,
            "published": self.published,
            "failed": self.failed,
            "oldest_pending_age_s": self.oldest_pending_age_s,
        }


def state_counts(conn: psycopg.Connection, services: Sequence[str]) -> list[ServiceCounts]:
    out = []
    for service in services:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE {pending}), count(*) FILTER (WHERE {published}),"
                " count(*) FILTER (WHERE {failed}),"
                " extract(epoch FROM clock_timestamp() - min(created_at) FILTER (WHERE {pending}))"
                " FROM {schema}.outbox"
            ).format(
                pending=sql.SQL(_STATE_SQL["pending"]),
                published=sql.SQL(_STATE_SQL["published"]),
                failed=sql.SQL(_STATE_SQL["failed"]),
                schema=sql.Identifier(service),
            )
        ).fetchone()
        assert row is not None
        lag = float(row[3]) if row[3] is not None else None
        out.append(ServiceCounts(service, int(row[0]), int(row[1]), int(row[2]), lag))
    return out


def get_row(
    conn: psycopg.Connection, service: str, row_id: int
) -> tuple[OutboxRow, dict[str, Any]] | None:
    """One row and its full envelope."""
    found = conn.execute(
        sql.SQL("SELECT {s}::text, {c}, envelope FROM {t}.outbox WHERE id = %s").format(
            s=sql.Literal(service), c=sql.SQL(_COLUMNS), t=sql.Identifier(service)
        ),
        (row_id,),
    ).fetchone()
    if found is None:
        return None
    return OutboxRow(*found[:-1]), dict(found[-1])


def consumers_of(
    conn: psycopg.Connection, event_ids: Sequence[UUID], services: Sequence[str]
) -> list[tuple[str, UUID, datetime]]:
    """(service, event id, processed_at) of every inbox that applied one of the events."""
    out: list[tuple[str, UUID, datetime]] = []
    if not event_ids:
        return out
    for service in services:
        out.extend(
            (service, r[0], r[1])
            for r in conn.execute(
                sql.SQL(
                    "SELECT event_id, processed_at FROM {}.inbox WHERE event_id = ANY(%s)"
                ).format(sql.Identifier(service)),
                (list(event_ids),),
            )
        )
    return out


def relay_active(conn: psycopg.Connection, service: str) -> bool:
    """Whether some relay holds this outbox's leadership lock (without touching the lock).

    A bigint advisory lock shows in ``pg_locks`` split into classid (high 32 bits) and
    objid (low 32 bits), with objsubid 1.
    """
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0))",
        (relay_lock_key(service),),
    ).fetchone()
    return bool(row and row[0])


# -- replay ------------------------------------------------------------------------------------


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
                s=sql.Literal(service), c=sql.SQL(_COLUMNS), t=sql.Identifier(service), w=where
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


# -- purge -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgePlan:
    service: str
    rows: int
    first_id: int | None
    last_id: int | None
    oldest_published_at: datetime | None
    newest_published_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "rows": self.rows,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "oldest_published_at": self.oldest_published_at,
            "newest_published_at": self.newest_published_at,
        }


_PURGEABLE = "published_at IS NOT NULL AND published_at < %s"


def plan_purge(
    conn: psycopg.Connection, services: Sequence[str], cutoff: datetime
) -> list[PurgePlan]:
    """Published rows older than ``cutoff``: never pending, never failed."""
    query = sql.SQL(
        "SELECT count(*), min(id), max(id), min(published_at), max(published_at)"
        " FROM {}.outbox WHERE " + _PURGEABLE
    )
    return [
        PurgePlan(service, int(row[0]), row[1], row[2], row[3], row[4])
        for service, row in per_service(conn, services, query, (cutoff,))
    ]


def purge(
    conn: psycopg.Connection,
    service: str,
    cutoff: datetime,
    *,
    change: Callable[[int], Change],
    batch_size: int = 5000,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Delete the service's purgeable rows in batches, in one transaction with its audit
    entry; returns (rows deleted, audit id). The predicate is checked again on every row
    it deletes, so a row replayed meanwhile (pending again) is never deleted."""
    delete = sql.SQL(
        "DELETE FROM {0}.outbox WHERE id IN (SELECT id FROM {0}.outbox WHERE "
        + _PURGEABLE
        + " ORDER BY id LIMIT %s) AND "
        + _PURGEABLE
    ).format(sql.Identifier(service))
    return delete_in_batches(
        conn,
        lambda limit: conn.execute(delete, (cutoff, limit, cutoff)).rowcount,
        change=change,
        batch_size=batch_size,
        on_batch=on_batch,
    )
