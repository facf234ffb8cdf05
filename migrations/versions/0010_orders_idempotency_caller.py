"""Idempotency-Keys are the caller's own: unique per customer, not across all customers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Orders are placed for the customer the bearer token names, so the customer is the caller:
the same key sent by two customers is two orders, and one customer cannot learn that another
used a key (a global key answered 409 to the second). Existing rows keep their keys: a key
unique across all customers is unique per customer too. A downgrade refuses while two
customers share a key, rather than dropping one of them.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Under the service's role: it owns the table (0002).
    op.execute("SET LOCAL ROLE orders")
    op.execute("ALTER TABLE orders.orders DROP CONSTRAINT orders_idempotency_key_key")
    op.execute(
        "ALTER TABLE orders.orders ADD CONSTRAINT orders_customer_idempotency_key_key"
        " UNIQUE (customer_id, idempotency_key)"
    )
    op.execute("RESET ROLE")


def downgrade() -> None:
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM orders.orders WHERE idempotency_key IS NOT NULL
                       GROUP BY idempotency_key HAVING count(*) > 1) THEN
                RAISE EXCEPTION 'two customers share an Idempotency-Key: it cannot be global';
            END IF;
        END $$
        """
    )
    op.execute("SET LOCAL ROLE orders")
    op.execute("ALTER TABLE orders.orders DROP CONSTRAINT orders_customer_idempotency_key_key")
    op.execute(
        "ALTER TABLE orders.orders ADD CONSTRAINT orders_idempotency_key_key"
        " UNIQUE (idempotency_key)"
    )
    op.execute("RESET ROLE")
