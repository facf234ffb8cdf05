"""The services' outbox tables seen by an operator: rows, their states, who consumed them.

States, as the relay defines them (``saga_runtime/relay_publish.py``):

* pending   - ``published_at IS NULL AND failed_at IS NULL``: the relay will publish it;
* published - ``published_at IS NOT NULL``: the broker acknowledged it;
* failed    - ``failed_at IS NOT NULL AND published_at IS NULL``: the broker refused it for
  good (``last_error`` says why) and the relay skips it.

Replaying rows is ``outbox_replay``'s, purging them ``outbox_purge``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from saga_runtime import relay_lock_key

__all__ = [
    "COLUMNS",
    "STATES",
    "OutboxFilter",
    "OutboxRow",
    "ServiceCounts",
    "consumers_of",
    "count_rows",
    "get_row",
    "relay_active",
    "select_rows",
    "state_counts",
]

STATES = ("pending", "published", "failed")
_STATE_SQL = {
    "pending": "published_at IS NULL AND failed_at IS NULL",
    "published": "published_at IS NOT NULL",
    "failed": "failed_at IS NOT NULL AND published_at IS NULL",
}
# The columns of an ``OutboxRow``, in its order (after the service).
COLUMNS = (
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
            columns=sql.SQL(COLUMNS),
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
            s=sql.Literal(service), c=sql.SQL(COLUMNS), t=sql.Identifier(service)
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
