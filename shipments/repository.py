"""SQL for the shipments table."""

from __future__ import annotations

import psycopg

from saga_runtime import AggregateStates
from shipments.domain import Shipment

_COLUMNS = "order_id, status, shipment_id, carrier, estimated_delivery, reason"


class ShipmentRepository:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def get(self, order_id: str) -> Shipment | None:
        found = load_shipments(self.conn, [order_id])
        return found[0] if found else None


def load_shipments(conn: psycopg.Connection, order_ids: list[str]) -> list[Shipment]:
    """The shipments of the orders among ``order_ids``, in one query."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM shipments.shipments WHERE order_id = ANY(%s)", (order_ids,)
    )
    return [Shipment(*row) for row in rows]


def save_shipments(conn: psycopg.Connection, shipments: list[Shipment]) -> None:
    """Insert or update ``shipments`` in one statement (each order once)."""
    conn.execute(
        f"INSERT INTO shipments.shipments ({_COLUMNS})"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::date[],"
        " %s::text[])"
        " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
        " shipment_id = EXCLUDED.shipment_id, carrier = EXCLUDED.carrier,"
        " estimated_delivery = EXCLUDED.estimated_delivery, reason = EXCLUDED.reason,"
        " updated_at = now()",
        (
            [s.order_id for s in shipments],
            [s.status for s in shipments],
            [s.shipment_id for s in shipments],
            [s.carrier for s in shipments],
            [s.estimated_delivery for s in shipments],
            [s.reason for s in shipments],
        ),
    )


SHIPMENTS: AggregateStates[Shipment] = AggregateStates(
    "shipments.shipments",
    load_many=load_shipments,
    save_many=save_shipments,
    key=lambda shipment: shipment.order_id,
)
"""Shipments as handlers read and change them: per batch of events, not per event."""
