"""A minimal service on the runtime, run as its own process by the consumer tests.

It consumes the orders topic as the ``stock`` service and records each
``Numbered`` event in ``stock.test_effects``; events with ``n < 0`` make the
handler sleep, so a test can send SIGTERM while a message is in flight.
"""

from __future__ import annotations

import time

from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    ServiceRuntime,
    UnitOfWork,
    configure_logging,
    get_logger,
)
from tests.support import Numbered

log = get_logger(__name__)

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS stock.test_effects (
    event_id uuid NOT NULL, aggregate_id text NOT NULL, n integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


class Counted(Numbered):
    event_type = "Counted"


def on_numbered(uow: UnitOfWork, event: Envelope) -> None:
    payload = event.payload_as(Numbered)
    log.info("sample.applying", n=payload.n)
    if payload.n < 0:
        time.sleep(2.0)
    uow.conn.execute(
        "INSERT INTO stock.test_effects (event_id, aggregate_id, n) VALUES (%s, %s, %s)",
        (event.event_id, event.aggregate_id, payload.n),
    )
    uow.emit(Counted(n=payload.n), aggregate_id=event.aggregate_id)


def main() -> int:
    configure_logging(service="stock")
    runtime = ServiceRuntime.build(
        service="stock",
        kafka=KafkaSettings(),
        database=DatabaseSettings(),
        consumer=ConsumerSettings(),
        handlers={"Numbered": on_numbered},
        subscribes_to=["orders"],
    )
    try:
        runtime.run_consumer()
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
