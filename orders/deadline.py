"""Cancels orders still PENDING after their deadline (reason: timeout)."""

from __future__ import annotations

import threading
from datetime import timedelta

from orders.handlers import expire_order
from orders.repository import OrderRepository
from saga_runtime import TRANSIENT_DB_ERRORS, UnitOfWorkFactory, get_logger

log = get_logger(__name__)


def sweep(factory: UnitOfWorkFactory, *, timeout: timedelta, batch: int = 100) -> int:
    """Cancel every overdue PENDING order, one transaction each; returns how many."""
    with factory.pool.connection() as conn:
        overdue = OrderRepository(conn).expired_pending(timeout=timeout, limit=batch)
    expired = 0
    for order_id in overdue:
        # Each order under its own lock: a payment arriving meanwhile wins or loses cleanly.
        with factory.begin() as uow:
            expired += expire_order(uow, order_id, timeout=timeout)
    if expired:
        log.info("orders.expired", count=expired)
    return expired


def run_sweeper(
    factory: UnitOfWorkFactory, *, timeout: timedelta, interval: float, stop: threading.Event
) -> None:
    """Sweep every ``interval`` seconds until ``stop``; database outages are waited out."""
    while not stop.wait(interval):
        try:
            sweep(factory, timeout=timeout)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("orders.sweep_failed", error=repr(exc))
