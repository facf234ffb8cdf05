"""The services' ``dead_letters`` tables seen by an operator: inspect, redrive, discard.

A redrive produces the original key, value and headers back to the original source topic
and waits for the broker's ack; only then is the letter marked ``redriven``. The consumer
that dead-lettered the event never recorded it in its inbox, so the redriven copy is applied
(not skipped as a duplicate); every other consumer group of that topic sees it again too, and
those that already applied the event skip it by its event id.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from saga_runtime.dead_letters import header_from_stored
from sagactl.ops.audit_log import Change, record
from sagactl.ops.producer import MessageSink

__all__ = [
    "REDRIVE_HEADER",
    "STATUSES",
    "DeadLetterRow",
    "RedriveOutcome",
    "describe_bytes",
    "discard",
    "get_letter",
    "list_letters",
    "redrive_one",
    "select_letters",
    "status_counts",
]

STATUSES = ("pending", "redriven", "discarded")
REDRIVE_HEADER = "sagactl.redriven_from"
_COLUMNS = (
    "id, source_topic, source_partition, source_offset, event_id, event_type, aggregate_id,"
    " error_type, error, attempts, status, created_at, resolved_at, resolution"
)


@dataclass(frozen=True)
class DeadLetterRow:
    service: str
    id: int
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: UUID | None
    event_type: str | None
    aggregate_id: str | None
    error_type: str
    error: str
    attempts: int
    status: str
    created_at: datetime
    resolved_at: datetime | None
    resolution: str | None
    key: bytes | None = None
    value: bytes | None = None
    headers: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, *, with_message: bool = False) -> dict[str, Any]:
        out = {
            "service": self.service,
            "id": self.id,
            "status": self.status,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "order_id": self.aggregate_id,
            "source": {
                "topic": self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
            },
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "resolved_at": self.resolved_at,
            "resolution": self.resolution,
        }
        if with_message:
            out["key"] = describe_bytes(self.key)
            out["value"] = describe_bytes(self.value)
            out["headers"] = [_described_header(k, v) for k, v in self.original_headers()]
        return out

    def original_headers(self) -> list[tuple[str, bytes | None]]:
        """The headers as the consumer received them (text or base64 in the table)."""
        return [header_from_stored(h) for h in self.headers]

    def kafka_headers(self) -> list[tuple[str, str | bytes | None]]:
        """The original headers, plus where this copy came from (the consumer ignores it;
        if the copy is dead-lettered again, the new letter shows its history)."""
        original: list[tuple[str, str | bytes | None]] = [
            (key, value) for key, value in self.original_headers() if key != REDRIVE_HEADER
        ]
        return [*original, (REDRIVE_HEADER, f"{self.service}.dead_letters/{self.id}".encode())]


def describe_bytes(data: bytes | None) -> dict[str, Any]:
    """Original bytes for people and scripts: text (and parsed JSON) when UTF-8, else hex;
    base64 always, so a script gets the exact bytes."""
    if data is None:
        return {"encoding": None, "size": 0}
    raw = bytes(data)
    out: dict[str, Any] = {"size": len(raw), "base64": base64.b64encode(raw).decode()}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"encoding": "binary", "hex": raw.hex(), **out}
    described: dict[str, Any] = {"encoding": "utf-8", "text": text, **out}
    with contextlib.suppress(ValueError):
        described["json"] = json.loads(text)
    return described


def _described_header(key: str, value: bytes | None) -> dict[str, Any]:
    """``{"key", "value"}`` with the value as text when it is UTF-8; otherwise ``value`` is
    None and ``value_base64`` / ``value_hex`` carry the exact bytes."""
    if value is None:
        return {"key": key, "value": None}
    try:
        return {"key": key, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "key": key,
            "value": None,
            "value_base64": base64.b64encode(value).decode(),
            "value_hex": value.hex(),
            "size": len(value),
        }


def _row(service: str, values: Sequence[Any], *, with_message: bool = False) -> DeadLetterRow:
    base = list(values[:14])
    if with_message:
        key, value, headers = values[14:17]
        base += [
            bytes(key) if key is not None else None,
            bytes(value) if value is not None else None,
            list(headers or []),
        ]
    return DeadLetterRow(service, *base)


def list_letters(
    conn: psycopg.Connection,
    services: Sequence[str],
    *,
    status: str | None = None,
    order_id: str | None = None,
    limit: int = 50,
) -> tuple[list[DeadLetterRow], int]:
    """Newest first, and how many match in all."""
    rows: list[DeadLetterRow] = []
    total = 0
    where = sql.SQL(
        "(%(status)s::text IS NULL OR status = %(status)s)"
        " AND (%(order)s::text IS NULL OR aggregate_id = %(order)s)"
    )
    params = {"status": status, "order": order_id, "limit": limit}
    for service in services:
        table = sql.Identifier(service)
        rows.extend(
            _row(service, r)
            for r in conn.execute(
                sql.SQL(
                    "SELECT {c} FROM {t}.dead_letters WHERE {w} ORDER BY id DESC LIMIT %(limit)s"
                ).format(c=sql.SQL(_COLUMNS), t=table, w=where),
                params,
            )
        )
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {t}.dead_letters WHERE {w}").format(t=table, w=where),
            params,
        ).fetchone()
        total += int(count[0]) if count else 0
    rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return rows[:limit], total


def status_counts(conn: psycopg.Connection, services: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for service in services:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE status = 'pending'),"
                " count(*) FILTER (WHERE status = 'redriven'),"
                " count(*) FILTER (WHERE status = 'discarded'),"
                " extract(epoch FROM clock_timestamp() - min(created_at)"
                "   FILTER (WHERE status = 'pending'))"
                " FROM {}.dead_letters"
            ).format(sql.Identifier(service))
        ).fetchone()
        assert row is not None
        out.append(
            {
                "service": service,
                "pending": int(row[0]),
                "redriven": int(row[1]),
                "discarded": int(row[2]),
                "oldest_pending_age_s": float(row[3]) if row[3] is not None else None,
            }
        )
    return out


def get_letter(conn: psycopg.Connection, service: str, letter_id: int) -> DeadLetterRow | None:
    found = conn.execute(
        sql.SQL(
            "SELECT {c}, message_key, message_value, headers FROM {t}.dead_letters WHERE id = %s"
        ).format(c=sql.SQL(_COLUMNS), t=sql.Identifier(service)),
        (letter_id,),
    ).fetchone()
    return _row(service, found, with_message=True) if found else None


def select_letters(
    conn: psycopg.Connection, service: str, *, ids: Sequence[int] | None, all_pending: bool
) -> tuple[list[DeadLetterRow], list[int]]:
    """The letters asked for (with their messages), and the ids that do not exist."""
    query = sql.SQL(
        "SELECT {c}, message_key, message_value, headers FROM {t}.dead_letters"
        " WHERE (%(all)s AND status = 'pending') OR id = ANY(%(ids)s) ORDER BY id"
    ).format(c=sql.SQL(_COLUMNS), t=sql.Identifier(service))
    found = [
        _row(service, r, with_message=True)
        for r in conn.execute(query, {"all": all_pending, "ids": list(ids or [])})
    ]
    known = {r.id for r in found}
    return found, [i for i in ids or [] if i not in known]


@dataclass(frozen=True)
class RedriveOutcome:
    id: int
    result: str  # redriven | skipped
    detail: str
    partition: int | None = None
    offset: int | None = None
    audit_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "result": self.result,
            "detail": self.detail,
            "partition": self.partition,
            "offset": self.offset,
            "audit_id": self.audit_id,
        }


def redrive_one(
    conn: psycopg.Connection,
    letter: DeadLetterRow,
    *,
    sink: MessageSink,
    resolution: str,
    change: Callable[[DeadLetterRow, int, int], Change],
) -> RedriveOutcome:
    """Produce the letter's message back to its source topic, then mark it redriven.

    The row stays locked from the check to the mark, so two operators cannot redrive it
    twice; if the broker refuses, nothing is marked (it stays pending) and the error is
    raised. If the mark fails after the ack, the message was still sent: a second redrive
    would be a duplicate, which the consumers' inboxes absorb.
    """
    table = sql.Identifier(letter.service)
    try:
        with conn.transaction():
            row = conn.execute(
                sql.SQL(
                    "SELECT status FROM {}.dead_letters WHERE id = %s FOR UPDATE NOWAIT"
                ).format(table),
                (letter.id,),
            ).fetchone()
            if row is None or row[0] != "pending":
                status = row[0] if row else "gone"
                return RedriveOutcome(letter.id, "skipped", f"it is {status}, not pending")
            partition, offset = sink.send(
                letter.source_topic,
                key=letter.key,
                value=letter.value,
                headers=letter.kafka_headers(),
            )
            conn.execute(
                sql.SQL(
                    "UPDATE {}.dead_letters SET status = 'redriven', resolved_at = now(),"
                    " resolution = %s WHERE id = %s"
                ).format(table),
                (f"{resolution} (to {letter.source_topic}[{partition}]@{offset})", letter.id),
            )
            audit_id = record(conn, change(letter, partition, offset))
    except psycopg.errors.LockNotAvailable:
        return RedriveOutcome(letter.id, "skipped", "another operator is handling it right now")
    return RedriveOutcome(
        letter.id,
        "redriven",
        f"sent to {letter.source_topic}[{partition}]@{offset}",
        partition,
        offset,
        audit_id,
    )


def discard(
    conn: psycopg.Connection,
    service: str,
    ids: Sequence[int],
    *,
    resolution: str,
    check: Callable[[list[int], list[tuple[int, str]]], None],
    change: Callable[[list[int], list[tuple[int, str]]], Change],
) -> tuple[list[int], list[tuple[int, str]], int]:
    """Mark pending letters discarded, in one transaction with the audit entry.

    Returns (discarded ids, skipped (id, status), audit id); ``check`` may refuse.
    """
    table = sql.Identifier(service)
    with conn.transaction():
        rows = conn.execute(
            sql.SQL(
                "SELECT id, status FROM {}.dead_letters WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
            ).format(table),
            (list(ids),),
        ).fetchall()
        chosen = [r[0] for r in rows if r[1] == "pending"]
        skipped = [(r[0], r[1]) for r in rows if r[1] != "pending"]
        check(chosen, skipped)
        conn.execute(
            sql.SQL(
                "UPDATE {}.dead_letters SET status = 'discarded', resolved_at = now(),"
                " resolution = %s WHERE id = ANY(%s)"
            ).format(table),
            (resolution, chosen),
        )
        audit_id = record(conn, change(chosen, skipped))
    return chosen, skipped, audit_id
