"""SQL for the loyalty.points table."""

from __future__ import annotations

import psycopg

from tests.toy.loyalty.domain import Award


class AwardRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def get(self, order_id: str) -> Award | None:
        row = self.conn.execute(
            "SELECT order_id, email, points FROM loyalty.points WHERE order_id = %s",
            (order_id,),
        ).fetchone()
        return None if row is None else Award(*row)

    def add(self, award: Award) -> None:
        self.conn.execute(
            "INSERT INTO loyalty.points (order_id, email, points) VALUES (%s, %s, %s)",
            (award.order_id, award.email, award.points),
        )
