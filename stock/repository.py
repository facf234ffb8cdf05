"""SQL for stock.products and stock.reservations."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from contracts.stock import PricedLine
from saga_runtime import AggregateStates
from stock.domain import Product, Reservation

_PRODUCT_COLUMNS = "sku, name, price_cents, on_hand, reserved, sold, restocked, received"


class StockRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def product(self, sku: str) -> Product | None:
        row = self.conn.execute(
            f"SELECT {_PRODUCT_COLUMNS} FROM stock.products WHERE sku = %s", (sku,)
        ).fetchone()
        return None if row is None else Product(*row)

    def products(self) -> list[Product]:
        rows = self.conn.execute(f"SELECT {_PRODUCT_COLUMNS} FROM stock.products ORDER BY sku")
        return [Product(*row) for row in rows]

    def lock_products(self, skus: Iterable[str]) -> dict[str, Product]:
        """Lock the rows of ``skus`` that exist, until the transaction ends.

        Every writer locks in the same (sku) order, so two orders sharing products wait for
        each other instead of deadlocking.
        """
        wanted = sorted(set(skus))
        if not wanted:
            return {}
        rows = self.conn.execute(
            f"SELECT {_PRODUCT_COLUMNS} FROM stock.products WHERE sku = ANY(%s)"
            " ORDER BY sku FOR UPDATE",
            (wanted,),
        )
        return {row[0]: Product(*row) for row in rows}

    def insert_product(self, product: Product) -> bool:
        """Add ``product`` unless its SKU exists; tells whether it was added."""
        cur = self.conn.execute(
            f"INSERT INTO stock.products ({_PRODUCT_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sku) DO NOTHING",
            (
                product.sku,
                product.name,
                product.price_cents,
                product.on_hand,
                product.reserved,
                product.sold,
                product.restocked,
                product.received,
            ),
        )
        return cur.rowcount == 1

    def update_product(self, product: Product) -> None:
        """Write a product whose row this transaction holds locked (see ``lock_products``)."""
        cur = self.conn.execute(
            "UPDATE stock.products SET name = %s, price_cents = %s, on_hand = %s,"
            " reserved = %s, sold = %s, restocked = %s, received = %s, updated_at = now()"
            " WHERE sku = %s",
            (
                product.name,
                product.price_cents,
                product.on_hand,
                product.reserved,
                product.sold,
                product.restocked,
                product.received,
                product.sku,
            ),
        )
        if cur.rowcount != 1:
            raise LookupError(f"product {product.sku!r} does not exist")

    def reservation(self, order_id: str) -> Reservation | None:
        row = self.conn.execute(
            "SELECT order_id, status, lines, total_cents, reason"
            " FROM stock.reservations WHERE order_id = %s",
            (order_id,),
        ).fetchone()
        if row is None:
            return None
        order, status, lines, total_cents, reason = row
        return Reservation(
            order,
            status,
            tuple(PricedLine.model_validate(line) for line in lines),
            total_cents,
            reason,
        )

    def save_reservation(self, reservation: Reservation) -> None:
        self.conn.execute(
            "INSERT INTO stock.reservations (order_id, status, lines, total_cents, reason)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
            " lines = EXCLUDED.lines, total_cents = EXCLUDED.total_cents,"
            " reason = EXCLUDED.reason, updated_at = now()",
            (
                reservation.order_id,
                reservation.status,
                Jsonb([line.model_dump(mode="json") for line in reservation.lines]),
                reservation.total_cents,
                reservation.reason,
            ),
        )


def _reservation(row: tuple[Any, ...]) -> Reservation:
    order, status, lines, total_cents, reason = row
    return Reservation(
        order,
        status,
        tuple(PricedLine.model_validate(line) for line in lines),
        total_cents,
        reason,
    )


def load_reservations(conn: psycopg.Connection, order_ids: list[str]) -> list[Reservation]:
    """The reservations of the orders among ``order_ids``, in one query."""
    rows = conn.execute(
        "SELECT order_id, status, lines, total_cents, reason"
        " FROM stock.reservations WHERE order_id = ANY(%s)",
        (order_ids,),
    )
    return [_reservation(row) for row in rows]


def save_reservations(conn: psycopg.Connection, reservations: list[Reservation]) -> None:
    """Insert or update ``reservations`` in one statement (each order once)."""
    conn.execute(
        "INSERT INTO stock.reservations (order_id, status, lines, total_cents, reason)"
        " SELECT order_id, status, lines::jsonb, total_cents, reason"
        " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[])"
        " AS u(order_id, status, lines, total_cents, reason)"
        " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
        " lines = EXCLUDED.lines, total_cents = EXCLUDED.total_cents,"
        " reason = EXCLUDED.reason, updated_at = now()",
        (
            [r.order_id for r in reservations],
            [r.status for r in reservations],
            [json.dumps([line.model_dump(mode="json") for line in r.lines]) for r in reservations],
            [r.total_cents for r in reservations],
            [r.reason for r in reservations],
        ),
    )


def lock_products(conn: psycopg.Connection, skus: list[str]) -> list[Product]:
    """The products among ``skus``, their rows locked until the transaction ends.

    Locked in sku order, as every writer locks them, so two transactions sharing
    products wait for each other instead of deadlocking.
    """
    rows = conn.execute(
        f"SELECT {_PRODUCT_COLUMNS} FROM stock.products WHERE sku = ANY(%s)"
        " ORDER BY sku FOR UPDATE",
        (sorted(skus),),
    )
    return [Product(*row) for row in rows]


def save_products(conn: psycopg.Connection, products: list[Product]) -> None:
    """Write products whose rows this transaction holds locked, in one statement."""
    cur = conn.execute(
        "UPDATE stock.products AS p SET name = u.name, price_cents = u.price_cents,"
        " on_hand = u.on_hand, reserved = u.reserved, sold = u.sold,"
        " restocked = u.restocked, received = u.received, updated_at = now()"
        " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::int[], %s::int[], %s::int[],"
        " %s::int[], %s::int[])"
        " AS u(sku, name, price_cents, on_hand, reserved, sold, restocked, received)"
        " WHERE p.sku = u.sku",
        (
            [p.sku for p in products],
            [p.name for p in products],
            [p.price_cents for p in products],
            [p.on_hand for p in products],
            [p.reserved for p in products],
            [p.sold for p in products],
            [p.restocked for p in products],
            [p.received for p in products],
        ),
    )
    if cur.rowcount != len(products):
        raise LookupError(f"some of the products {[p.sku for p in products]} do not exist")


RESERVATIONS: AggregateStates[Reservation] = AggregateStates(
    "stock.reservations",
    load_many=load_reservations,
    save_many=save_reservations,
    key=lambda reservation: reservation.order_id,
)
"""Reservations as handlers read and change them: per batch of events, not per event."""

PRODUCTS: AggregateStates[Product] = AggregateStates(
    "stock.products",
    load_many=lock_products,
    save_many=save_products,
    key=lambda product: product.sku,
    ahead=False,
)
"""Products as handlers lock, read and change them: each locked once per batch."""
