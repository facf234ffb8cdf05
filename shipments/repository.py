"""SQL for the shipments table."""

from __future__ import annotations

import psycopg

from shipments.domain import Shipment


class ShipmentRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def get(self, order_id: str) -> Shipment | None:
        row = self.conn.execute(
            "SELECT order_id, status, shipment_id, carrier, estimated_delivery, reason"
            " FROM shipments.shipments WHERE order_id = %s",
            (order_id,),
        ).fetchone()
        return None if row is None else Shipment(*row)

    def save(self, shipment: Shipment) -> None:
        self.conn.execute(
            "INSERT INTO shipments.shipments"
            " (order_id, status, shipment_id, carrier, estimated_delivery, reason)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
            " shipment_id = EXCLUDED.shipment_id, carrier = EXCLUDED.carrier,"
            " estimated_delivery = EXCLUDED.estimated_delivery, reason = EXCLUDED.reason,"
            " updated_at = now()",
            (
                shipment.order_id,
                shipment.status,
                shipment.shipment_id,
                shipment.carrier,
                shipment.estimated_delivery,
                shipment.reason,
            ),
        )
