"""Cancels orders still PENDING after their deadline (reason: timeout).

Every orders process runs a sweeper. Each order is claimed in its own
transaction with ``FOR UPDATE SKIP LOCKED``, so sweepers share the overdue
orders and never wait for one another, and the deadline is read on one clock,
the database's. One order that cannot be expired is logged and passed over for
the rest of the pass; an error does not end the sweeper.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from orders.handlers import expire_order
from orders.repository import OrderRepository
from saga_runtime import TRANSIENT_DB_ERRORS, UnitOfWork, UnitOfWorkFactory, get_logger

log = get_logger(__name__)


def sweep(factory: UnitOfWorkFactory, *, timeout: timedelta, batch: int = 100) -> int:
    """Cancel up to ``batch`` overdue PENDING orders, one transaction each; returns how many.

    A database outage propagates (the caller waits it out); any other failure of
    one order is logged with its traceback and that order is passed over until
    the next pass, so that it cannot hold up the others.
    """
    expired = 0
    passed_over: list[str] = []
    for _ in range(batch):
        claimed: list[str] = []
        try:
            with factory.begin() as uow:
                done = _expire_next(uow, timeout=timeout, passed_over=passed_over, claimed=claimed)
        except TRANSIENT_DB_ERRORS:
            raise
        except Exception:
            if not claimed:
                raise  # not about one order: the caller logs it and sweeps again later
            log.exception("orders.expire_failed", order_id=claimed[0])
            passed_over.append(claimed[0])
            continue
        if done is None:
            break
        expired += done
    if expired:
        log.info("orders.expired", count=expired)
    return expired


def _expire_next(
    uow: UnitOfWork, *, timeout: timedelta, passed_over: list[str], claimed: list[str]
) -> int | None:
    """Expire the next overdue order; 1 if it was, 0 if not, None if none is left."""
    found = OrderRepository(uow.conn).claim_expired_pending(
        timeout=timeout, passed_over=passed_over
    )
    if found is None:
        return None
    order_id, now = found
    claimed.append(order_id)
    # Handlers take the order's advisory lock before its row: waiting for that lock
    # while holding the row could deadlock with one of them. If one holds it, it is
    # changing the order right now: leave it to the next pass.
    busy = uow.conn.execute(
        "SELECT NOT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
        (uow.outbox.lock_key(order_id),),
    ).fetchone()
    if busy is None or busy[0]:
        passed_over.append(order_id)
        return 0
    return int(expire_order(uow, order_id, timeout=timeout, now=now))


def run_sweeper(
    factory: UnitOfWorkFactory, *, timeout: timedelta, interval: float, stop: threading.Event
) -> None:
    """Sweep every ``interval`` seconds until ``stop``.

    Nothing ends it but ``stop``: a database outage is waited out, and any other
    error is logged with its traceback and the next pass runs as usual.
    """
    while not stop.wait(interval):
        try:
            sweep(factory, timeout=timeout)
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("orders.sweep_failed", error=repr(exc))
        except Exception:
            log.exception("orders.sweep_crashed")
