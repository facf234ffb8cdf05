"""The seed catalogue: what a fresh system has on its shelves."""

from __future__ import annotations

import psycopg

from stock.domain import Product
from stock.repository import StockRepository

# Quantities are small enough that a demo can sell a product out (LAMP-01 has 3).
CATALOGUE: tuple[Product, ...] = tuple(
    Product(sku, name, price_cents, on_hand=quantity, received=quantity)
    for sku, name, price_cents, quantity in (
        ("KEYB-01", "Mechanical keyboard", 8_900, 40),
        ("MOUSE-01", "Wireless mouse", 2_900, 100),
        ("MON-27", "27-inch monitor", 24_900, 15),
        ("HEAD-01", "Noise-cancelling headphones", 14_900, 25),
        ("CABLE-C", "USB-C cable, 1 m", 1_200, 500),
        ("LAMP-01", "Limited-edition desk lamp", 6_500, 3),
    )
)


def seed(conn: psycopg.Connection, catalogue: tuple[Product, ...] = CATALOGUE) -> int:
    """Add the catalogue's products that are missing; returns how many were added.

    Existing products are left as they are (their counts belong to the running system), so
    seeding is safe to repeat. Works on an autocommit connection or inside a transaction.
    """
    repository = StockRepository(conn)
    with conn.transaction():
        return sum(repository.insert_product(product) for product in catalogue)
