"""SQL for orders and their saga timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from contracts.orders import Address, OrderLine
from orders.domain import Order, PricedLine
from saga_runtime import Envelope

_COLUMNS = (
    "id, customer_id, email, status, lines, card_token, shipping_address, correlation_id,"
    " created_at, reason_code, reason, priced_lines, total_cents"
)


@dataclass(frozen=True)
class TimelineEntry:
    event_id: str
    event_type: str
    producer: str
    occurred_at: datetime


def _order(row: tuple[Any, ...]) -> Order:
    (
        id_,
        customer,
        email,
        status,
        lines,
        token,
        address,
        correlation,
        created,
        code,
        reason,
        priced,
        total,
    ) = row
    return Order(
        id=id_,
        customer_id=customer,
        email=email,
        status=status,
        lines=tuple(OrderLine.model_validate(line) for line in lines),
        card_token=token,
        shipping_address=Address.model_validate(address),
        correlation_id=correlation,
        created_at=created,
        reason_code=code,
        reason=reason,
        priced_lines=None if priced is None else tuple(PricedLine(**line) for line in priced),
        total_cents=total,
    )


class OrderRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def get(self, order_id: str) -> Order | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM orders.orders WHERE id = %s", (order_id,)
        ).fetchone()
        return None if row is None else _order(row)

    def get_by_idempotency_key(self, customer_id: str, key: str) -> tuple[Order, str | None] | None:
        """The customer's order placed under ``key`` (keys are unique per customer), and the
        hash of the request that placed it."""
        row = self.conn.execute(
            f"SELECT {_COLUMNS}, request_hash FROM orders.orders"
            " WHERE customer_id = %s AND idempotency_key = %s",
            (customer_id, key),
        ).fetchone()
        return None if row is None else (_order(row[:-1]), row[-1])

    def add(self, order: Order, *, idempotency_key: str | None, request_hash: str | None) -> None:
        self.conn.execute(
            "INSERT INTO orders.orders (id, customer_id, email, status, lines, card_token,"
            " shipping_address, correlation_id, created_at, idempotency_key, request_hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                order.id,
                order.customer_id,
                order.email,
                order.status,
                Jsonb([line.model_dump() for line in order.lines]),
                order.card_token,
                Jsonb(order.shipping_address.model_dump()),
                order.correlation_id,
                order.created_at,
                idempotency_key,
                request_hash,
            ),
        )

    def save(self, order: Order) -> None:
        self.conn.execute(
            "UPDATE orders.orders SET status = %s, reason_code = %s, reason = %s,"
            " priced_lines = %s, total_cents = %s, updated_at = now() WHERE id = %s",
            (
                order.status,
                order.reason_code,
                order.reason,
                None
                if order.priced_lines is None
                else Jsonb([vars(line) for line in order.priced_lines]),
                order.total_cents,
                order.id,
            ),
        )

    def list_for_customer(
        self, customer_id: str, *, limit: int, before: tuple[datetime, str] | None
    ) -> list[Order]:
        """Newest first, keyset-paged on (created_at, id) so pages never shift."""
        if before is None:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM orders.orders WHERE customer_id = %s"
                " ORDER BY created_at DESC, id DESC LIMIT %s",
                (customer_id, limit),
            )
        else:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS} FROM orders.orders WHERE customer_id = %s"
                " AND (created_at, id) < (%s, %s) ORDER BY created_at DESC, id DESC LIMIT %s",
                (customer_id, before[0], before[1], limit),
            )
        return [_order(row) for row in rows]

    def claim_expired_pending(
        self, *, timeout: timedelta, passed_over: list[str]
    ) -> tuple[str, datetime] | None:
        """Lock the oldest PENDING order past its deadline that nobody else holds.

        Returns its id and the database's clock (the one the deadline was read
        against), or None when no such order is left. ``SKIP LOCKED``: an order
        another sweeper (or a writer) holds is someone else's, so concurrent
        sweepers share the overdue orders instead of queueing behind each other.
        The row stays locked until the caller's transaction ends.
        """
        row = self.conn.execute(
            "SELECT id, now() FROM orders.orders WHERE status = 'PENDING'"
            " AND created_at < now() - %s AND NOT id = ANY(%s::text[])"
            " ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED",
            (timeout, passed_over),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def record(self, envelope: Envelope) -> None:
        """Add an event about the order to its timeline (once, whoever delivers it)."""
        self.conn.execute(
            "INSERT INTO orders.timeline (event_id, order_id, event_type, producer, occurred_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
            (
                envelope.event_id,
                envelope.aggregate_id,
                envelope.event_type,
                envelope.producer,
                envelope.occurred_at,
            ),
        )

    def timeline(self, order_id: str) -> list[TimelineEntry]:
        rows = self.conn.execute(
            "SELECT event_id, event_type, producer, occurred_at FROM orders.timeline"
            " WHERE order_id = %s ORDER BY occurred_at, recorded_at",
            (order_id,),
        )
        return [TimelineEntry(str(r[0]), r[1], r[2], r[3]) for r in rows]
