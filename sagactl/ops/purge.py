"""What the operator's purges (``sagactl outbox purge``, ``sagactl inbox purge``) share: a
plan per service of what would go, and the batched delete that commits with its audit entry.

Each table says which of its rows may go (``sagactl/ops/outbox_purge.py``,
``sagactl/ops/inbox.py``); the rest is the same, so that both purges behave and are audited
alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql

from sagactl.ops.audit_log import Change, record

__all__ = ["Plan", "Purge", "delete_in_batches", "per_service"]


class Plan(Protocol):
    """What a purge would delete from one service's table."""

    @property
    def service(self) -> str: ...

    @property
    def rows(self) -> int: ...

    def as_dict(self) -> dict[str, Any]: ...


class Purge(Protocol):
    """A table's purge: deletes the service's rows selected by ``cutoff`` with its audit entry
    (``change`` of the count deleted); returns (rows deleted, audit id)."""

    def __call__(
        self,
        conn: psycopg.Connection,
        service: str,
        cutoff: datetime,
        *,
        change: Callable[[int], Change],
        on_batch: Callable[[int], None] | None = None,
    ) -> tuple[int, int]: ...


def per_service(
    conn: psycopg.Connection, services: Sequence[str], query: sql.SQL, params: Sequence[Any]
) -> list[tuple[str, tuple[Any, ...]]]:
    """The one row ``query`` returns for each service, ``{}`` in it being the service's
    schema."""
    out = []
    for service in services:
        row = conn.execute(query.format(sql.Identifier(service)), params).fetchone()
        assert row is not None
        out.append((service, tuple(row)))
    return out


def delete_in_batches(
    conn: psycopg.Connection,
    delete_batch: Callable[[int], int],
    *,
    change: Callable[[int], Change],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Call ``delete_batch(batch_size)`` (it deletes up to that many rows and returns how many)
    until a batch comes back short, then record ``change(rows deleted)``, all in one
    transaction: the rows go if and only if the audit log says so. Returns (rows deleted,
    audit id)."""
    total = 0
    with conn.transaction():
        while True:
            deleted = delete_batch(batch_size)
            total += deleted
            if on_batch is not None and deleted:
                on_batch(deleted)
            if deleted < batch_size:
                break
        audit_id = record(conn, change(total))
    return total, audit_id
