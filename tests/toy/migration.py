"""The toy's migration: what ``migrations/versions/0006_loyalty.py`` would hold.

Its role, schema and runtime tables come from the runtime; it adds its one table, created
under its role like the runtime tables. (Kept out of the real migration chain; the test
runs it through Alembic's ``op`` on the test's database.)
"""

from __future__ import annotations

from alembic import op

from saga_runtime import create_service_schema, drop_service_schema

POINTS = """
    CREATE TABLE loyalty.points (
        order_id   text PRIMARY KEY,
        email      text NOT NULL,
        points     integer NOT NULL CHECK (points > 0),
        awarded_at timestamptz NOT NULL DEFAULT now()
    )
"""


def upgrade() -> None:
    create_service_schema(op.execute, "loyalty", POINTS)


def downgrade() -> None:
    drop_service_schema(op.execute, "loyalty")
