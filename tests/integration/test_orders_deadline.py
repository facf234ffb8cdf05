"""The deadline sweeper on the real database: shared work, one clock, and it never dies."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg import sql
from structlog.testing import capture_logs

import orders.handlers
from contracts.orders import Address, OrderLine
from orders.deadline import run_sweeper, sweep
from orders.handlers import place_order
from saga_runtime import (
    DatabaseSettings,
    KafkaSettings,
    Outbox,
    UnitOfWorkFactory,
    create_pool,
    events_topic,
    login_role,
)
from tests.support import wait_until

pytestmark = pytest.mark.integration

TIMEOUT = timedelta(seconds=60)


@pytest.fixture
def factory(database: DatabaseSettings, kafka: KafkaSettings) -> Iterator[UnitOfWorkFactory]:
    pool = create_pool(database, role="orders", name="orders-deadline-test")
    yield UnitOfWorkFactory(
        pool=pool,
        outbox=Outbox(schema="orders", topic=events_topic("orders", kafka.topic_prefix)),
        producer="orders",
    )
    pool.close()


def placed(factory: UnitOfWorkFactory, conn: psycopg.Connection, *, age: timedelta) -> str:
    """A PENDING order created ``age`` ago by the database's clock."""
    with factory.begin() as uow:
        order, _ = place_order(
            uow,
            customer_id="c-1",
            email="ada@example.com",
            lines=[OrderLine(sku="SKU-1", quantity=1)],
            card_token="tok_visa",
            shipping_address=Address(
                name="Ada", line1="1 Main St", city="NYC", postal_code="10001", country="US"
            ),
            idempotency_key=None,
            fingerprint=None,
        )
    conn.execute("UPDATE orders.orders SET created_at = now() - %s WHERE id = %s", (age, order.id))
    return order.id


def status(conn: psycopg.Connection, order_id: str) -> str:
    row = conn.execute("SELECT status FROM orders.orders WHERE id = %s", (order_id,)).fetchone()
    assert row is not None
    return str(row[0])


def cancellations(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT aggregate_id, count(*) FROM orders.outbox"
        " WHERE event_type = 'OrderCancelled' GROUP BY aggregate_id"
    )
    return {r[0]: r[1] for r in rows}


def test_two_sweepers_expire_each_overdue_order_exactly_once(factory, admin_conn):
    overdue = [placed(factory, admin_conn, age=timedelta(minutes=5)) for _ in range(30)]
    fresh = placed(factory, admin_conn, age=timedelta(seconds=1))
    start = threading.Barrier(2)

    def one_sweeper() -> int:
        start.wait()
        return sweep(factory, timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = [f.result(timeout=120) for f in [pool.submit(one_sweeper) for _ in range(2)]]

    assert sum(counts) == len(overdue), "each order counted by the one sweeper that expired it"
    assert cancellations(admin_conn) == {order_id: 1 for order_id in overdue}
    assert {status(admin_conn, o) for o in overdue} == {"CANCELLED"}
    assert status(admin_conn, fresh) == "PENDING"


GATE = 4242  # an advisory lock key the test holds to stop a sweeper inside an order


@pytest.fixture
def gated_orders(admin_conn: psycopg.Connection) -> Iterator[list[str]]:
    """Updating an order whose id the test puts in the yielded list waits for the GATE lock."""
    gated: list[str] = []
    admin_conn.execute("CREATE TABLE public.deadline_test_gated (id text PRIMARY KEY)")
    admin_conn.execute(
        "CREATE FUNCTION public.deadline_test_gate() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN"
        "   IF EXISTS (SELECT FROM public.deadline_test_gated g WHERE g.id = NEW.id) THEN"
        f"     PERFORM pg_advisory_xact_lock({GATE});"
        "   END IF;"
        "   RETURN NEW;"
        " END $$"
    )
    # To the role the service logs in as (saga_runtime.db_logins).
    admin_conn.execute(
        sql.SQL("GRANT SELECT ON public.deadline_test_gated TO {}").format(
            sql.Identifier(login_role(admin_conn.info.dsn, "orders"))
        )
    )
    admin_conn.execute(
        "CREATE TRIGGER deadline_test_gate BEFORE UPDATE ON orders.orders"
        " FOR EACH ROW EXECUTE FUNCTION public.deadline_test_gate()"
    )
    try:
        yield gated
    finally:
        admin_conn.execute("DROP TRIGGER deadline_test_gate ON orders.orders")
        admin_conn.execute("DROP FUNCTION public.deadline_test_gate()")
        admin_conn.execute("DROP TABLE public.deadline_test_gated")


def waiting_at_the_gate(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = 0 AND objid = %s AND objsubid = 1",
        (GATE,),
    ).fetchone()
    return row is not None and row[0] > 0


def test_a_sweeper_busy_with_one_order_does_not_hold_up_another(
    factory, admin_conn, database, gated_orders
):
    stuck = placed(factory, admin_conn, age=timedelta(minutes=10))  # the oldest: swept first
    others = [placed(factory, admin_conn, age=timedelta(minutes=5)) for _ in range(3)]
    admin_conn.execute("INSERT INTO public.deadline_test_gated VALUES (%s)", (stuck,))
    with (
        psycopg.connect(database.url, autocommit=True) as gate,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
        try:
            first = pool.submit(sweep, factory, timeout=TIMEOUT)
            wait_until(lambda: waiting_at_the_gate(admin_conn), what="the first sweeper stuck")
            second = pool.submit(sweep, factory, timeout=TIMEOUT)
            # The second sweeper ends while the first still holds its order.
            assert second.result(timeout=60) == len(others), "it did not wait for the first"
            assert {status(admin_conn, o) for o in others} == {"CANCELLED"}
            assert status(admin_conn, stuck) == "PENDING"
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        assert first.result(timeout=60) == 1, "the first sweeper expired its order, and only it"
    assert cancellations(admin_conn) == {o: 1 for o in [stuck, *others]}


@pytest.fixture
def failing_order_trigger(admin_conn: psycopg.Connection) -> Iterator[list[str]]:
    """Updates of the orders whose ids the test puts in the yielded list fail (non-transient)."""
    bad: list[str] = []
    admin_conn.execute("CREATE TABLE public.deadline_test_bad (id text PRIMARY KEY)")
    admin_conn.execute(
        "CREATE FUNCTION public.deadline_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN"
        "   IF EXISTS (SELECT FROM public.deadline_test_bad b WHERE b.id = NEW.id) THEN"
        "     RAISE EXCEPTION 'order % cannot be updated', NEW.id;"
        "   END IF;"
        "   RETURN NEW;"
        " END $$"
    )
    admin_conn.execute(
        sql.SQL("GRANT SELECT ON public.deadline_test_bad TO {}").format(
            sql.Identifier(login_role(admin_conn.info.dsn, "orders"))
        )
    )
    admin_conn.execute(
        "CREATE TRIGGER deadline_test_refuse BEFORE UPDATE ON orders.orders"
        " FOR EACH ROW EXECUTE FUNCTION public.deadline_test_refuse()"
    )
    try:
        yield bad
    finally:
        admin_conn.execute("DROP TRIGGER deadline_test_refuse ON orders.orders")
        admin_conn.execute("DROP FUNCTION public.deadline_test_refuse()")
        admin_conn.execute("DROP TABLE public.deadline_test_bad")


def test_an_order_that_cannot_be_expired_does_not_stop_the_sweeper(
    factory, admin_conn, failing_order_trigger
):
    bad = placed(factory, admin_conn, age=timedelta(minutes=10))  # the oldest: swept first
    good = placed(factory, admin_conn, age=timedelta(minutes=5))
    admin_conn.execute("INSERT INTO public.deadline_test_bad VALUES (%s)", (bad,))
    stop = threading.Event()
    sweeper = threading.Thread(
        target=run_sweeper,
        args=(factory,),
        kwargs={"timeout": TIMEOUT, "interval": 0.1, "stop": stop},
        daemon=True,
    )
    with capture_logs() as logs:
        sweeper.start()
        try:
            wait_until(lambda: status(admin_conn, good) == "CANCELLED", what="the good order")
            wait_until(
                lambda: any(e["event"] == "orders.expire_failed" for e in logs),
                what="the failure logged",
            )
            assert sweeper.is_alive(), "the sweeper survived the bad order"
            assert status(admin_conn, bad) == "PENDING"

            admin_conn.execute("DELETE FROM public.deadline_test_bad")  # the cause is fixed
            wait_until(lambda: status(admin_conn, bad) == "CANCELLED", what="the bad order")
        finally:
            stop.set()
            sweeper.join(30)
    failure = next(e for e in logs if e["event"] == "orders.expire_failed")
    assert failure["order_id"] == bad and failure["log_level"] == "error"
    assert failure.get("exc_info"), "logged with its traceback"
    assert cancellations(admin_conn) == {bad: 1, good: 1}


class _SkewedClock(datetime):
    skew = timedelta(0)

    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
        return datetime.now(tz) + cls.skew


def test_the_deadline_is_read_on_the_databases_clock_whatever_the_apps_says(
    factory, admin_conn, monkeypatch
):
    overdue = placed(factory, admin_conn, age=TIMEOUT + timedelta(minutes=2))
    not_yet = placed(factory, admin_conn, age=TIMEOUT - timedelta(seconds=30))
    monkeypatch.setattr(orders.handlers, "datetime", _SkewedClock)

    _SkewedClock.skew = timedelta(hours=-1)  # the app's clock is behind the database's
    assert sweep(factory, timeout=TIMEOUT) == 1
    assert status(admin_conn, overdue) == "CANCELLED"
    _SkewedClock.skew = timedelta(hours=1)  # ...or ahead of it
    assert sweep(factory, timeout=TIMEOUT) == 0
    assert status(admin_conn, not_yet) == "PENDING"
