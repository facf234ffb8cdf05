"""One order across every service: its cross-service timeline, and orders that stopped.

``load_trace`` reads what each service recorded (outbox rows with the order as aggregate,
inbox rows for those events, dead letters); ``build_steps`` is a pure function that orders
them in time and measures each hop. ``find_stuck`` lists orders that are not final after a
while, with where they stopped and ``hint_for`` what to look at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from sagactl.ops.connection import SERVICES
from sagactl.ops.parsing import format_age

__all__ = [
    "Consumed",
    "DeadLettered",
    "Emitted",
    "StuckOrder",
    "TraceData",
    "TraceStep",
    "build_steps",
    "find_stuck",
    "hint_for",
    "load_trace",
]


@dataclass(frozen=True)
class Emitted:
    service: str
    outbox_id: int
    event_id: UUID
    event_type: str
    created_at: datetime
    published_at: datetime | None
    failed_at: datetime | None
    last_error: str | None
    causation_id: str | None
    trace_id: str | None = None  # of the envelope's traceparent (saga_runtime.tracing)

    @property
    def state(self) -> str:
        if self.published_at is not None:
            return "published"
        return "failed" if self.failed_at is not None else "pending"


@dataclass(frozen=True)
class Consumed:
    service: str
    event_id: UUID
    event_type: str
    processed_at: datetime


@dataclass(frozen=True)
class DeadLettered:
    service: str
    id: int
    event_id: UUID | None
    event_type: str | None
    status: str
    error_type: str
    error: str
    created_at: datetime


@dataclass
class TraceData:
    order_id: str
    order: dict[str, Any] | None = None
    emitted: list[Emitted] = field(default_factory=list)
    consumed: list[Consumed] = field(default_factory=list)
    dead_letters: list[DeadLettered] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)  # orders.timeline

    @property
    def found(self) -> bool:
        return bool(self.order or self.emitted or self.dead_letters)

    @property
    def trace_ids(self) -> list[str]:
        """The traces the order's events belong to, the first event's first: one when the
        whole saga ran traced (a sweeper's cancellation starts one of its own)."""
        found: list[str] = []
        for event in sorted(self.emitted, key=lambda e: (e.created_at, e.outbox_id)):
            if event.trace_id and event.trace_id not in found:
                found.append(event.trace_id)
        return found


def load_trace(conn: psycopg.Connection, order_id: str) -> TraceData:
    data = TraceData(order_id)
    row = conn.execute(
        "SELECT status, reason_code, reason, total_cents, created_at, updated_at"
        " FROM orders.orders WHERE id = %s",
        (order_id,),
    ).fetchone()
    if row is not None:
        keys = ("status", "reason_code", "reason", "total_cents", "created_at", "updated_at")
        data.order = dict(zip(keys, row, strict=True))
    data.timeline = [
        {"event_type": r[0], "producer": r[1], "occurred_at": r[2]}
        for r in conn.execute(
            "SELECT event_type, producer, occurred_at FROM orders.timeline WHERE order_id = %s"
            " ORDER BY occurred_at, recorded_at",
            (order_id,),
        )
    ]
    for service in SERVICES:
        table = sql.Identifier(service)
        data.emitted.extend(
            Emitted(service, *r)
            for r in conn.execute(
                sql.SQL(
                    "SELECT id, event_id, event_type, created_at, published_at, failed_at,"
                    " last_error, envelope->>'causation_id',"
                    " substr(envelope->>'traceparent', 4, 32) FROM {}.outbox"
                    " WHERE aggregate_id = %s ORDER BY id"
                ).format(table),
                (order_id,),
            )
        )
        data.dead_letters.extend(
            DeadLettered(service, *r)
            for r in conn.execute(
                sql.SQL(
                    "SELECT id, event_id, event_type, status, error_type, error, created_at"
                    " FROM {}.dead_letters WHERE aggregate_id = %s ORDER BY id"
                ).format(table),
                (order_id,),
            )
        )
    event_ids = [e.event_id for e in data.emitted]
    if event_ids:
        for service in SERVICES:
            data.consumed.extend(
                Consumed(service, *r)
                for r in conn.execute(
                    sql.SQL(
                        "SELECT event_id, event_type, processed_at FROM {}.inbox"
                        " WHERE event_id = ANY(%s)"
                    ).format(sql.Identifier(service)),
                    (event_ids,),
                )
            )
    return data


@dataclass(frozen=True)
class TraceStep:
    at: datetime
    kind: str  # emitted | consumed | dead-lettered
    service: str
    event_type: str | None
    event_id: UUID | None
    from_service: str | None = None  # who emitted the event a consumption applied
    latency_ms: float | None = None  # emitted: publish latency; consumed: the hop's latency
    state: str | None = None  # emitted: pending/published/failed; dead letter: its status
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind,
            "service": self.service,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "from_service": self.from_service,
            "latency_ms": self.latency_ms,
            "state": self.state,
            "detail": self.detail,
        }


def _ms(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds() * 1000, 1)


def build_steps(data: TraceData) -> list[TraceStep]:
    """Every emission, consumption and dead letter of the order, oldest first.

    Publish latency = published_at - created_at of the outbox row; hop latency = the
    consumer's processed_at - the emitting row's created_at (commit to applied, one clock:
    the database's).
    """
    emitted_by_id = {e.event_id: e for e in data.emitted}
    steps: list[TraceStep] = []
    for e in data.emitted:
        steps.append(
            TraceStep(
                at=e.created_at,
                kind="emitted",
                service=e.service,
                event_type=e.event_type,
                event_id=e.event_id,
                latency_ms=_ms(e.published_at, e.created_at) if e.published_at else None,
                state=e.state,
                detail=e.last_error if e.state == "failed" else None,
            )
        )
    for c in data.consumed:
        source = emitted_by_id.get(c.event_id)
        steps.append(
            TraceStep(
                at=c.processed_at,
                kind="consumed",
                service=c.service,
                event_type=c.event_type,
                event_id=c.event_id,
                from_service=source.service if source else None,
                latency_ms=_ms(c.processed_at, source.created_at) if source else None,
            )
        )
    for d in data.dead_letters:
        source = emitted_by_id.get(d.event_id) if d.event_id else None
        steps.append(
            TraceStep(
                at=d.created_at,
                kind="dead-lettered",
                service=d.service,
                event_type=d.event_type,
                event_id=d.event_id,
                from_service=source.service if source else None,
                state=d.status,
                detail=f"#{d.id} {d.error_type}: {d.error}",
            )
        )
    order = {"emitted": 0, "consumed": 1, "dead-lettered": 2}
    steps.sort(key=lambda s: (s.at, order[s.kind]))
    return steps


# -- stuck orders ------------------------------------------------------------------------------


@dataclass
class StuckOrder:
    order_id: str
    status: str
    created_at: datetime
    age_s: float
    last_event: dict[str, Any] | None = None  # the order's timeline's last entry
    last_outbox: dict[str, Any] | None = None  # the newest outbox row about it, any service
    unpublished: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)  # pending ones

    @property
    def stopped_at(self) -> str:
        if self.last_outbox and (
            not self.last_event or self.last_outbox["created_at"] >= self.last_event["occurred_at"]
        ):
            return f"{self.last_outbox['service']}/{self.last_outbox['event_type']}"
        if self.last_event:
            return f"{self.last_event['producer']}/{self.last_event['event_type']}"
        return "nothing recorded"

    def as_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "created_at": self.created_at,
            "age_s": round(self.age_s, 3),
            "stopped_at": self.stopped_at,
            "last_event": self.last_event,
            "last_outbox": self.last_outbox,
            "unpublished": self.unpublished,
            "dead_letters": self.dead_letters,
            "hint": hint_for(self),
        }


def hint_for(order: StuckOrder) -> str:
    """What an operator should look at first."""
    if order.dead_letters:
        d = order.dead_letters[0]
        return (
            f"{d['service']} dead-lettered {d['event_type'] or 'a message'} "
            f"({d['error_type']}): sagactl dlq show {d['service']} {d['id']}"
        )
    failed = [u for u in order.unpublished if u["state"] == "failed"]
    if failed:
        f = failed[0]
        return (
            f"{f['service']} outbox row {f['id']} ({f['event_type']}) failed to publish: "
            f"sagactl outbox show {f['service']} {f['id']}"
        )
    if order.unpublished:
        u = order.unpublished[0]
        return (
            f"{u['service']} outbox row {u['id']} ({u['event_type']}) waits for the relay "
            f"(pending {format_age(u['age_s'])}): is a relay running?"
        )
    if order.status == "PENDING":
        # Payments' part is the charge, an effect: its attempts and last error are there.
        return (
            "waiting for stock or payments to answer, or for the pending deadline (the "
            f"charge: sagactl effects list --service payments --order {order.order_id})"
        )
    if order.status == "APPROVED":
        # Usually the carrier's booking, an effect: its attempts and last error are there.
        return (
            "waiting for shipments to schedule the shipment (the carrier's booking: "
            f"sagactl effects list --service shipments --order {order.order_id})"
        )
    return "no outbox row or dead letter explains it: check the services' logs"


def find_stuck(
    conn: psycopg.Connection, older_than: timedelta, *, limit: int = 100
) -> tuple[list[StuckOrder], int]:
    """Orders neither SHIPPED nor CANCELLED, created more than ``older_than`` ago, oldest
    first; and how many there are in all."""
    where = "status NOT IN ('SHIPPED', 'CANCELLED') AND created_at < clock_timestamp() - %s"
    total_row = conn.execute(f"SELECT count(*) FROM orders.orders WHERE {where}", (older_than,))
    total = int((total_row.fetchone() or [0])[0])
    stuck = [
        StuckOrder(r[0], r[1], r[2], float(r[3]))
        for r in conn.execute(
            "SELECT id, status, created_at, extract(epoch FROM clock_timestamp() - created_at)"
            f" FROM orders.orders WHERE {where} ORDER BY created_at, id LIMIT %s",
            (older_than, limit),
        )
    ]
    if not stuck:
        return [], total
    by_id = {s.order_id: s for s in stuck}
    ids = list(by_id)
    for order_id, event_type, producer, occurred_at in conn.execute(
        "SELECT DISTINCT ON (order_id) order_id, event_type, producer, occurred_at"
        " FROM orders.timeline WHERE order_id = ANY(%s)"
        " ORDER BY order_id, occurred_at DESC, recorded_at DESC",
        (ids,),
    ):
        by_id[order_id].last_event = {
            "event_type": event_type,
            "producer": producer,
            "occurred_at": occurred_at,
        }
    for service in SERVICES:
        table = sql.Identifier(service)
        for order_id, row_id, event_type, created_at, published, failed, age in conn.execute(
            sql.SQL(
                "SELECT aggregate_id, id, event_type, created_at, published_at IS NOT NULL,"
                " failed_at IS NOT NULL, extract(epoch FROM clock_timestamp() - created_at)"
                " FROM {}.outbox WHERE aggregate_id = ANY(%s) ORDER BY id"
            ).format(table),
            (ids,),
        ):
            order = by_id[order_id]
            state = "published" if published else ("failed" if failed else "pending")
            row = {
                "service": service,
                "id": row_id,
                "event_type": event_type,
                "created_at": created_at,
                "state": state,
                "age_s": float(age),
            }
            if order.last_outbox is None or created_at >= order.last_outbox["created_at"]:
                order.last_outbox = row
            if state != "published":
                order.unpublished.append(row)
        for order_id, letter_id, event_type, error_type, created_at in conn.execute(
            sql.SQL(
                "SELECT aggregate_id, id, event_type, error_type, created_at FROM {}.dead_letters"
                " WHERE status = 'pending' AND aggregate_id = ANY(%s) ORDER BY id"
            ).format(table),
            (ids,),
        ):
            by_id[order_id].dead_letters.append(
                {
                    "service": service,
                    "id": letter_id,
                    "event_type": event_type,
                    "error_type": error_type,
                    "created_at": created_at,
                }
            )
    return stuck, total
