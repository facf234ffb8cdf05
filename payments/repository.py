"""SQL for the payments table."""

from __future__ import annotations

import psycopg

from payments.domain import Payment


class PaymentRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def get(self, order_id: str) -> Payment | None:
        row = self.conn.execute(
            "SELECT order_id, status, card_token, amount_cents, cancelled, charge_id, refund_id,"
            " failure_code, failure_reason FROM payments.payments WHERE order_id = %s",
            (order_id,),
        ).fetchone()
        return None if row is None else Payment(*row)

    def save(self, payment: Payment) -> None:
        self.conn.execute(
            "INSERT INTO payments.payments (order_id, status, card_token, amount_cents, cancelled,"
            " charge_id, refund_id, failure_code, failure_reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
            " card_token = EXCLUDED.card_token, amount_cents = EXCLUDED.amount_cents,"
            " cancelled = EXCLUDED.cancelled, charge_id = EXCLUDED.charge_id,"
            " refund_id = EXCLUDED.refund_id, failure_code = EXCLUDED.failure_code,"
            " failure_reason = EXCLUDED.failure_reason, updated_at = now()",
            (
                payment.order_id,
                payment.status,
                payment.card_token,
                payment.amount_cents,
                payment.cancelled,
                payment.charge_id,
                payment.refund_id,
                payment.failure_code,
                payment.failure_reason,
            ),
        )
