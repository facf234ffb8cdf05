"""``ops.audit_log``: who changed what with ``sagactl``, when, why, and with which command.

Every change is recorded in the same transaction as the change itself, so the record and
the data can never disagree; the table refuses updates and deletes (migration 0003).
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from sagactl.ops.render import to_json

__all__ = ["AuditEntry", "Change", "command_line", "default_actor", "list_entries", "record"]


def default_actor() -> str:
    """The person behind the command: ``SAGACTL_ACTOR``, the user who ran sudo, or the OS user."""
    for variable in ("SAGACTL_ACTOR", "SUDO_USER"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (some containers)
        return f"uid:{os.getuid()}"


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["sagactl", *argv])


@dataclass(frozen=True)
class Change:
    """What one command is about to record."""

    actor: str
    action: str  # outbox.replay, …, dlq.discard, effects.retry, effects.abandon
    service: str | None
    reason: str | None
    target: dict[str, Any]  # which rows, and what became of them
    command: str


def record(conn: psycopg.Connection, change: Change) -> int:
    """Insert the entry inside the caller's transaction; returns its id."""
    row = conn.execute(
        "INSERT INTO ops.audit_log (actor, action, service, reason, target, command, host)"
        " VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s) RETURNING id",
        (
            change.actor,
            change.action,
            change.service,
            change.reason,
            to_json(change.target),
            change.command,
            socket.gethostname(),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class AuditEntry:
    id: int
    occurred_at: datetime
    actor: str
    action: str
    service: str | None
    reason: str | None
    target: dict[str, Any]
    command: str
    host: str | None


def list_entries(
    conn: psycopg.Connection,
    *,
    action: str | None = None,
    service: str | None = None,
    limit: int = 20,
) -> list[AuditEntry]:
    """Newest first."""
    rows = conn.execute(
        "SELECT id, occurred_at, actor, action, service, reason, target, command, host"
        " FROM ops.audit_log"
        " WHERE (%(action)s::text IS NULL OR action = %(action)s)"
        "   AND (%(service)s::text IS NULL OR service = %(service)s)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"action": action, "service": service, "limit": limit},
    ).fetchall()
    return [
        AuditEntry(
            id=r[0],
            occurred_at=r[1],
            actor=r[2],
            action=r[3],
            service=r[4],
            reason=r[5],
            target=r[6] if isinstance(r[6], dict) else json.loads(r[6]),
            command=r[7],
            host=r[8],
        )
        for r in rows
    ]
