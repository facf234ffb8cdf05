"""A stand-in process for ``test_top``: it records through the runtime's own metrics calls
(``saga_runtime.metrics``) and serves them with the runtime's ``MetricsServer``, as a service
or a relay does, without needing Kafka or PostgreSQL.

``python -m tests.e2e.metered_process orders PORT``: a saga finishes every 50 ms (SHIPPED,
0.3 s end to end), each from an applied event; and payments' charge, one call in four
retried. ``... relay PORT``: leads the orders outbox and publishes a row every 50 ms.
"""

from __future__ import annotations

import sys
import time

from saga_runtime import metrics
from saga_runtime.metrics_http import MetricsServer


def main(role: str, port: int) -> None:
    MetricsServer(host="127.0.0.1", port=port)
    if role == "relay":
        metrics.relay_active("orders", True)
    tick = 0
    while True:
        tick += 1
        if role == "orders":
            metrics.saga_finished("SHIPPED", "completed", 0.3)
            metrics.consumer_batch("orders", ["ShipmentBooked"], ["applied"], 0.01)
            metrics.effect_called("payments", "charge", "retry" if tick % 4 == 0 else "ok", 0.02)
        else:
            metrics.relay_delivered("orders", [0.02], failed=0)
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
