"""The services' effects tables seen by an operator: calls to the outside world and their state.

A service that runs its calls through the effect executor has a ``<service>.effects`` table
(``saga_runtime.effects_schema``); one that does not yet is simply left out of ``all``.
Statuses are shown as the table holds them: an executor newer than this tool may write
one that ``EFFECT_STATUSES`` does not list, and it is shown and filtered on as it is.

Retrying and abandoning effects is ``effects_change``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from saga_runtime.effects_schema import EFFECT_STATUSES

__all__ = [
    "COLUMNS",
    "KNOWN_STATUSES",
    "EffectDetail",
    "EffectFilter",
    "EffectRow",
    "StatusCounts",
    "aggregate_effects",
    "count_effects",
    "get_effect",
    "select_effects",
    "status_counts",
    "with_effects",
]

KNOWN_STATUSES: tuple[str, ...] = EFFECT_STATUSES
# The columns of an ``EffectRow``, in its order (after the service). The request and the
# outcome, which can be large, are read only for ``get_effect``.
COLUMNS = (
    "id, aggregate_id, kind, idempotency_key, status, attempts, next_attempt_at, deadline_at,"
    " lease_owner, lease_until, last_error, correlation_id, created_at, updated_at"
)


@dataclass(frozen=True)
class EffectFilter:
    """Which effects: every given criterion must hold (``statuses``: any of them)."""

    statuses: tuple[str, ...] = ()
    kind: str | None = None
    order_id: str | None = None
    ids: tuple[int, ...] = ()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.statuses:
            out["status"] = list(self.statuses)
        if self.kind is not None:
            out["kind"] = self.kind
        if self.order_id is not None:
            out["order_id"] = self.order_id
        if self.ids:
            out["ids"] = list(self.ids)
        return out

    def where(self) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = [sql.SQL("TRUE")]
        params: list[Any] = []
        if self.statuses:
            clauses.append(sql.SQL("status = ANY(%s)"))
            params.append(list(self.statuses))
        if self.kind is not None:
            clauses.append(sql.SQL("kind = %s"))
            params.append(self.kind)
        if self.order_id is not None:
            clauses.append(sql.SQL("aggregate_id = %s"))
            params.append(self.order_id)
        if self.ids:
            clauses.append(sql.SQL("id = ANY(%s)"))
            params.append(list(self.ids))
        return sql.SQL(" AND ").join(clauses), params


@dataclass(frozen=True)
class EffectRow:
    service: str
    id: int
    aggregate_id: str
    kind: str
    idempotency_key: str
    status: str
    attempts: int
    next_attempt_at: datetime
    deadline_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    correlation_id: UUID | None
    created_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "id": self.id,
            "order_id": self.aggregate_id,
            "kind": self.kind,
            "idempotency_key": self.idempotency_key,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "deadline_at": self.deadline_at,
            "lease_owner": self.lease_owner,
            "lease_until": self.lease_until,
            "last_error": self.last_error,
            "correlation_id": self.correlation_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def _table(service: str) -> sql.Identifier:
    return sql.Identifier(service, "effects")


def with_effects(conn: psycopg.Connection, services: Sequence[str]) -> list[str]:
    """The services among ``services`` that have an effects table, in the same order."""
    rows = conn.execute(
        "SELECT s FROM unnest(%s::text[]) WITH ORDINALITY AS t(s, n)"
        " WHERE to_regclass(quote_ident(s) || '.effects') IS NOT NULL ORDER BY n",
        (list(services),),
    ).fetchall()
    return [r[0] for r in rows]


def select_effects(
    conn: psycopg.Connection,
    services: Sequence[str],
    flt: EffectFilter,
    *,
    limit: int | None = None,
) -> list[EffectRow]:
    """Newest first, across ``services`` (each must have the table: see ``with_effects``)."""
    if not services:
        return []
    where, where_params = flt.where()
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for service in services:
        parts.append(
            sql.SQL("SELECT {s}::text AS service, {c} FROM {t} WHERE {w}").format(
                s=sql.Literal(service), c=sql.SQL(COLUMNS), t=_table(service), w=where
            )
        )
        params.extend(where_params)
    query = sql.SQL(
        "SELECT * FROM ({}) AS selected ORDER BY created_at DESC, id DESC, service"
    ).format(sql.SQL(" UNION ALL ").join(parts))
    if limit is not None:
        query = sql.SQL("{} LIMIT %s").format(query)
        params.append(limit)
    return [EffectRow(*r) for r in conn.execute(query, params).fetchall()]


def count_effects(conn: psycopg.Connection, services: Sequence[str], flt: EffectFilter) -> int:
    total = 0
    where, params = flt.where()
    for service in services:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_table(service), where), params
        ).fetchone()
        total += int(row[0]) if row else 0
    return total


@dataclass(frozen=True)
class StatusCounts:
    """One service's effects by status, and the two signs of an executor in trouble."""

    service: str
    counts: dict[str, int] = field(default_factory=dict)  # every status present, known or not
    oldest_due_age_s: float | None = None  # how long the oldest due pending effect has waited
    expired_leases: int = 0  # running effects whose executor stopped renewing (or died)

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "counts": {status: self.counts.get(status, 0) for status in self.statuses()},
            "oldest_due_age_s": self.oldest_due_age_s,
            "expired_leases": self.expired_leases,
        }

    def statuses(self) -> list[str]:
        """The known statuses in their order, then any others the table holds."""
        return [*KNOWN_STATUSES, *sorted(set(self.counts) - set(KNOWN_STATUSES))]


def status_counts(conn: psycopg.Connection, services: Sequence[str]) -> list[StatusCounts]:
    out = []
    for service in services:
        counts = {
            str(status): int(n)
            for status, n in conn.execute(
                sql.SQL("SELECT status, count(*) FROM {} GROUP BY status").format(_table(service))
            )
        }
        row = conn.execute(
            sql.SQL(
                "SELECT extract(epoch FROM now() - min(next_attempt_at)"
                "   FILTER (WHERE status = 'pending' AND next_attempt_at <= now())),"
                " count(*) FILTER (WHERE status = 'running' AND lease_until < now())"
                " FROM {}"
            ).format(_table(service))
        ).fetchone()
        assert row is not None
        age = float(row[0]) if row[0] is not None else None
        out.append(StatusCounts(service, counts, age, int(row[1])))
    return out


@dataclass(frozen=True)
class EffectDetail:
    row: EffectRow
    request: Any
    outcome: Any


def get_effect(conn: psycopg.Connection, service: str, effect_id: int) -> EffectDetail | None:
    """One effect with its request and outcome."""
    found = conn.execute(
        sql.SQL("SELECT {s}::text, {c}, request, outcome FROM {t} WHERE id = %s").format(
            s=sql.Literal(service), c=sql.SQL(COLUMNS), t=_table(service)
        ),
        (effect_id,),
    ).fetchone()
    if found is None:
        return None
    return EffectDetail(EffectRow(*found[:-2]), found[-2], found[-1])


def aggregate_effects(
    conn: psycopg.Connection, service: str, aggregate_id: str, *, limit: int = 50
) -> list[EffectRow]:
    """The aggregate's effects in the order the executor runs them (id order)."""
    rows = conn.execute(
        sql.SQL(
            "SELECT {s}::text, {c} FROM {t} WHERE aggregate_id = %s ORDER BY id LIMIT %s"
        ).format(s=sql.Literal(service), c=sql.SQL(COLUMNS), t=_table(service)),
        (aggregate_id, limit),
    ).fetchall()
    return [EffectRow(*r) for r in rows]
