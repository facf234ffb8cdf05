"""SQL for the payments table."""

from __future__ import annotations

import psycopg

from payments.domain import Payment
from saga_runtime import AggregateStates

_COLUMNS = (
    "order_id, status, card_token, amount_cents, cancelled, charge_id, refund_id,"
    " failure_code, failure_reason"
)


class PaymentRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def get(self, order_id: str) -> Payment | None:
        found = load_payments(self.conn, [order_id])
        return found[0] if found else None


def load_payments(conn: psycopg.Connection, order_ids: list[str]) -> list[Payment]:
    """The payments of the orders among ``order_ids``, in one query."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM payments.payments WHERE order_id = ANY(%s)", (order_ids,)
    )
    return [Payment(*row) for row in rows]


def save_payments(conn: psycopg.Connection, payments: list[Payment]) -> None:
    """Insert or update ``payments`` in one statement (each order once)."""
    conn.execute(
        f"INSERT INTO payments.payments ({_COLUMNS})"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::bool[],"
        " %s::text[], %s::text[], %s::text[], %s::text[])"
        " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
        " card_token = EXCLUDED.card_token, amount_cents = EXCLUDED.amount_cents,"
        " cancelled = EXCLUDED.cancelled, charge_id = EXCLUDED.charge_id,"
        " refund_id = EXCLUDED.refund_id, failure_code = EXCLUDED.failure_code,"
        " failure_reason = EXCLUDED.failure_reason, updated_at = now()",
        (
            [p.order_id for p in payments],
            [p.status for p in payments],
            [p.card_token for p in payments],
            [p.amount_cents for p in payments],
            [p.cancelled for p in payments],
            [p.charge_id for p in payments],
            [p.refund_id for p in payments],
            [p.failure_code for p in payments],
            [p.failure_reason for p in payments],
        ),
    )


PAYMENTS: AggregateStates[Payment] = AggregateStates(
    "payments.payments",
    load_many=load_payments,
    save_many=save_payments,
    key=lambda payment: payment.order_id,
)
"""Payments as handlers read and change them: per batch of events, not per event."""
