"""SQL for orders and their saga timeline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from contracts.orders import Address, OrderLine
from orders.domain import Order, PricedLine
from saga_runtime import AggregateStates, Envelope

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
        found = load_orders(self.conn, [order_id])
        return found[0] if found else None

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
        save_orders(self.conn, [order])

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

    def timeline(self, order_id: str) -> list[TimelineEntry]:
        rows = self.conn.execute(
            "SELECT event_id, event_type, producer, occurred_at FROM orders.timeline"
            " WHERE order_id = %s ORDER BY occurred_at, recorded_at",
            (order_id,),
        )
        return [TimelineEntry(str(r[0]), r[1], r[2], r[3]) for r in rows]


def record_timeline(conn: psycopg.Connection, events: list[Envelope]) -> None:
    """Add events about orders to their timelines, in one statement (each once, whoever
    delivers it): a unit of work queues them with ``UnitOfWork.defer``."""
    conn.execute(
        "INSERT INTO orders.timeline (event_id, order_id, event_type, producer, occurred_at)"
        " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[],"
        " %s::timestamptz[]) ON CONFLICT (event_id) DO NOTHING",
        (
            [e.event_id for e in events],
            [e.aggregate_id for e in events],
            [e.event_type for e in events],
            [e.producer for e in events],
            [e.occurred_at for e in events],
        ),
    )


def load_orders(conn: psycopg.Connection, order_ids: list[str]) -> list[Order]:
    """The orders among ``order_ids``, in one query."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM orders.orders WHERE id = ANY(%s)", (order_ids,))
    return [_order(row) for row in rows]


def save_orders(conn: psycopg.Connection, orders: list[Order]) -> None:
    """Write what decisions change of existing orders, in one statement (each order once)."""
    conn.execute(
        "UPDATE orders.orders AS o SET status = u.status, reason_code = u.reason_code,"
        " reason = u.reason, priced_lines = u.priced_lines::jsonb,"
        " total_cents = u.total_cents, updated_at = now()"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::bigint[]) AS u(id, status, reason_code, reason, priced_lines, total_cents)"
        " WHERE o.id = u.id",
        (
            [order.id for order in orders],
            [order.status for order in orders],
            [order.reason_code for order in orders],
            [order.reason for order in orders],
            [
                None
                if order.priced_lines is None
                else json.dumps([vars(line) for line in order.priced_lines])
                for order in orders
            ],
            [order.total_cents for order in orders],
        ),
    )


ORDERS: AggregateStates[Order] = AggregateStates(
    "orders.orders", load_many=load_orders, save_many=save_orders, key=lambda order: order.id
)
"""Orders as handlers read and change them: per batch of events, not per event."""


# Orders not final this many seconds (the parameter) after they were placed.
STUCK_ORDERS = (
    "SELECT count(*) FROM orders.orders WHERE status IN ('PENDING', 'APPROVED')"
    " AND created_at < now() - make_interval(secs => %s)"
)
