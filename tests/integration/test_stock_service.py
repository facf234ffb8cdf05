"""The stock service's handlers on the real runtime, broker and database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from contracts.orders import Address, OrderApproved, OrderCancelled, OrderCreated, OrderLine
from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    Envelope,
    Event,
    KafkaSettings,
    ServiceRuntime,
    dead_letter_topic,
    ensure_topics,
    events_topic,
)
from stock import bootstrap, handlers
from stock.catalogue import CATALOGUE, seed
from stock.domain import Product
from stock.repository import StockRepository
from stock.settings import StockSettings
from tests.fixtures.kafka import produce
from tests.support import ThreadedRunner, wait_until

pytestmark = pytest.mark.integration

ADDRESS = Address(name="A", line1="1 Main St", city="NYC", postal_code="10001", country="US")


def created(order_id: str, *lines: tuple[str, int]) -> OrderCreated:
    return OrderCreated(
        order_id=order_id,
        customer_id="c-1",
        email="a@example.com",
        lines=[OrderLine(sku=sku, quantity=q) for sku, q in lines],
        card_token="tok_visa",
        shipping_address=ADDRESS,
    )


def approved(order_id: str, *lines: tuple[str, int]) -> OrderApproved:
    return OrderApproved(
        order_id=order_id,
        customer_id="c-1",
        email="a@example.com",
        lines=[OrderLine(sku=sku, quantity=q) for sku, q in lines],
        total_cents=0,
        shipping_address=ADDRESS,
    )


def cancelled(order_id: str) -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        email="a@example.com",
        reason_code="payment_declined",
        reason="card declined",
        previous_status="PENDING",
    )


def wrap(event: Event, order_id: str) -> Envelope:
    return Envelope.new(event, aggregate_id=order_id, producer="orders")


@pytest.fixture
def products(admin_conn: psycopg.Connection) -> Callable[..., None]:
    def add(*items: tuple[str, int, int]) -> None:
        repository = StockRepository(admin_conn)
        for sku, on_hand, price in items:
            assert repository.insert_product(
                Product(sku, f"name {sku}", price, on_hand=on_hand, received=on_hand)
            )

    return add


def product(conn: psycopg.Connection, sku: str) -> Product:
    found = StockRepository(conn).product(sku)
    assert found is not None
    return found


def status(conn: psycopg.Connection, order_id: str) -> str | None:
    reservation = StockRepository(conn).reservation(order_id)
    return None if reservation is None else reservation.status


def emitted(conn: psycopg.Connection, order_id: str) -> list[dict[str, Any]]:
    """The envelopes the stock service wrote to its outbox for ``order_id``, in order."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT envelope FROM stock.outbox WHERE aggregate_id = %s ORDER BY id", (order_id,)
        )
    ]


def processed(conn: psycopg.Connection, events: list[Envelope]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM stock.inbox WHERE event_id = ANY(%s)",
        ([e.event_id for e in events],),
    ).fetchone()
    assert row is not None
    return int(row[0])


def assert_conserved(conn: psycopg.Connection) -> None:
    broken = conn.execute(
        "SELECT sku FROM stock.products"
        " WHERE received <> on_hand + reserved + sold - restocked OR received < 0"
    ).fetchall()
    assert broken == []


# --- through Kafka and the consumer runner -----------------------------------------------------


@pytest.fixture
def stock_service(database: DatabaseSettings, kafka: KafkaSettings) -> Iterator[ServiceRuntime]:
    ensure_topics(
        kafka,
        [
            events_topic("orders", kafka.topic_prefix),
            events_topic("stock", kafka.topic_prefix),
            dead_letter_topic("stock", kafka.topic_prefix),
        ],
    )
    settings = StockSettings(
        kafka=kafka,
        database=database,
        consumer=ConsumerSettings(backoff_initial=0.05, backoff_max=0.5),
    )
    runtime = bootstrap.build(settings)
    assert runtime.runner is not None

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    with ThreadedRunner(run, runtime.runner.stop):
        yield runtime


def deliver(kafka: KafkaSettings, envelopes: list[Envelope]) -> None:
    produce(
        kafka,
        events_topic("orders", kafka.topic_prefix),
        [(e.aggregate_id.encode(), e.to_bytes()) for e in envelopes],
    )


def test_an_order_in_stock_is_reserved_at_stock_prices(products, stock_service, kafka, admin_conn):
    products(("A-1", 5, 250), ("B-2", 2, 1_000))
    order = wrap(created("o-1", ("A-1", 2), ("B-2", 2), ("A-1", 1)), "o-1")
    deliver(kafka, [order])
    wait_until(lambda: status(admin_conn, "o-1") == "reserved", what="reservation")

    [reserved] = emitted(admin_conn, "o-1")
    assert reserved["event_type"] == "StockReserved"
    assert reserved["causation_id"] == str(order.event_id)
    assert reserved["correlation_id"] == str(order.correlation_id)
    assert reserved["payload"]["lines"] == [
        {"sku": "A-1", "quantity": 3, "unit_price_cents": 250},
        {"sku": "B-2", "quantity": 2, "unit_price_cents": 1_000},
    ]
    assert reserved["payload"]["total_cents"] == 3 * 250 + 2 * 1_000
    assert product(admin_conn, "A-1") == Product("A-1", "name A-1", 250, 2, 3, 0, 0, 5)
    assert product(admin_conn, "B-2") == Product("B-2", "name B-2", 1_000, 0, 2, 0, 0, 2)


def test_a_failed_reservation_reserves_nothing(products, stock_service, kafka, admin_conn):
    products(("A-1", 5, 250), ("B-2", 1, 1_000))
    short = wrap(created("o-short", ("A-1", 1), ("B-2", 2)), "o-short")
    unknown = wrap(created("o-unknown", ("A-1", 1), ("ZZ-9", 1)), "o-unknown")
    deliver(kafka, [short, unknown])
    wait_until(lambda: processed(admin_conn, [short, unknown]) == 2, what="both orders")

    [failed_short] = emitted(admin_conn, "o-short")
    [failed_unknown] = emitted(admin_conn, "o-unknown")
    assert failed_short["event_type"] == failed_unknown["event_type"] == "StockReservationFailed"
    assert failed_short["payload"]["reason_code"] == "out_of_stock"
    assert "B-2: requested 2, available 1" in failed_short["payload"]["reason"]
    assert failed_unknown["payload"]["reason_code"] == "unknown_sku"
    assert "ZZ-9" in failed_unknown["payload"]["reason"]
    assert status(admin_conn, "o-short") == status(admin_conn, "o-unknown") == "failed"
    assert product(admin_conn, "A-1").on_hand == 5 and product(admin_conn, "A-1").reserved == 0
    assert product(admin_conn, "B-2").on_hand == 1


def test_approval_sells_and_duplicates_change_nothing(products, stock_service, kafka, admin_conn):
    products(("A-1", 5, 250))
    order = wrap(created("o-1", ("A-1", 2)), "o-1")
    # The same fact published twice under two event ids: the inbox cannot dedupe it.
    replayed = wrap(created("o-1", ("A-1", 2)), "o-1")
    approval = wrap(approved("o-1", ("A-1", 2)), "o-1")
    deliver(kafka, [order, order, replayed, approval, approval])
    wait_until(lambda: processed(admin_conn, [order, replayed, approval]) == 3, what="applied")

    assert [e["event_type"] for e in emitted(admin_conn, "o-1")] == ["StockReserved", "StockSold"]
    assert status(admin_conn, "o-1") == "sold"
    assert product(admin_conn, "A-1") == Product("A-1", "name A-1", 250, 3, 0, 2, 0, 5)
    assert_conserved(admin_conn)


def test_cancellation_releases_a_reservation_and_restocks_a_sale(
    products, stock_service, kafka, admin_conn
):
    products(("A-1", 5, 250))
    released = [
        wrap(created("o-r", ("A-1", 1)), "o-r"),
        wrap(cancelled("o-r"), "o-r"),
        wrap(cancelled("o-r"), "o-r"),
    ]
    restocked = [
        wrap(created("o-s", ("A-1", 2)), "o-s"),
        wrap(approved("o-s", ("A-1", 2)), "o-s"),
        wrap(cancelled("o-s"), "o-s"),
        wrap(cancelled("o-s"), "o-s"),
    ]
    deliver(kafka, released + restocked)
    wait_until(lambda: processed(admin_conn, released + restocked) == 7, what="all applied")

    assert [e["event_type"] for e in emitted(admin_conn, "o-r")] == [
        "StockReserved",
        "StockReleased",
    ]
    assert [e["event_type"] for e in emitted(admin_conn, "o-s")] == [
        "StockReserved",
        "StockSold",
        "StockRestocked",
    ]
    assert emitted(admin_conn, "o-s")[-1]["payload"]["lines"] == [{"sku": "A-1", "quantity": 2}]
    assert (status(admin_conn, "o-r"), status(admin_conn, "o-s")) == ("released", "restocked")
    assert product(admin_conn, "A-1") == Product("A-1", "name A-1", 250, 5, 0, 2, 2, 5)
    assert_conserved(admin_conn)


def test_a_cancellation_before_the_order_voids_it(products, stock_service, kafka, admin_conn):
    products(("A-1", 5, 250))
    events = [wrap(cancelled("o-1"), "o-1"), wrap(created("o-1", ("A-1", 1)), "o-1")]
    deliver(kafka, events)
    wait_until(lambda: processed(admin_conn, events) == 2, what="both applied")

    assert emitted(admin_conn, "o-1") == []
    assert status(admin_conn, "o-1") == "voided"
    assert product(admin_conn, "A-1").on_hand == 5


# --- concurrent transactions (as two consumers or the API would run them) ----------------------


@pytest.fixture
def runtime(database: DatabaseSettings, kafka: KafkaSettings) -> Iterator[ServiceRuntime]:
    runtime = bootstrap.build(StockSettings(kafka=kafka, database=database))
    try:
        yield runtime
    finally:
        runtime.close()


def waiting_for_locks(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'stock'"
        " AND wait_event_type = 'Lock'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def race(
    runtime: ServiceRuntime,
    admin_conn: psycopg.Connection,
    database: DatabaseSettings,
    envelopes: list[Envelope],
    hold: list[str],
) -> None:
    """Apply ``envelopes`` in concurrent transactions that truly overlap.

    The rows of ``hold`` are locked elsewhere, and each transaction starts only once the
    previous one is blocked on them, so they queue in the order given; then all go at once.
    Re-raises whatever any of them raised (a deadlock, for one).
    """
    errors: list[BaseException] = []

    def apply(envelope: Envelope) -> None:
        try:
            with runtime.uow_factory.begin(cause=envelope) as uow:
                handlers.on_order_created(uow, envelope)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(e,)) for e in envelopes]
    with psycopg.connect(database.url) as blocker:
        blocker.execute("SELECT 1 FROM stock.products WHERE sku = ANY(%s) FOR UPDATE", (hold,))
        for started, thread in enumerate(threads, start=1):
            thread.start()
            wait_until(
                lambda n=started: waiting_for_locks(admin_conn) == n,  # type: ignore[misc]
                what=f"{started} transaction(s) waiting on the held rows",
            )
        blocker.rollback()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    if errors:
        raise errors[0]


def test_two_orders_for_the_last_unit_exactly_one_wins(products, runtime, admin_conn, database):
    products(("LAST-1", 1, 4_900))
    orders = [wrap(created(f"o-{n}", ("LAST-1", 1)), f"o-{n}") for n in range(2)]
    race(runtime, admin_conn, database, orders, hold=["LAST-1"])

    outcomes = sorted(emitted(admin_conn, f"o-{n}")[0]["event_type"] for n in range(2))
    assert outcomes == ["StockReservationFailed", "StockReserved"]
    assert product(admin_conn, "LAST-1") == Product("LAST-1", "name LAST-1", 4_900, 0, 1, 0, 0, 1)


def test_orders_naming_the_same_products_in_opposite_orders_do_not_deadlock(
    products, runtime, admin_conn, database
):
    products(("A-1", 10, 100), ("B-2", 10, 100))
    # Locking in line order would deadlock here: o-ba would hold B-2 while waiting for A-1,
    # which o-ab gets first and then waits for B-2.
    orders = [
        wrap(created("o-ab", ("A-1", 1), ("B-2", 1)), "o-ab"),
        wrap(created("o-ba", ("B-2", 1), ("A-1", 1)), "o-ba"),
    ]
    race(runtime, admin_conn, database, orders, hold=["A-1"])

    for order_id in ("o-ab", "o-ba"):
        assert status(admin_conn, order_id) == "reserved"
    assert product(admin_conn, "A-1").reserved == 2
    assert product(admin_conn, "B-2").reserved == 2
    assert_conserved(admin_conn)


def test_seeding_adds_missing_products_only(admin_conn):
    assert seed(admin_conn) == len(CATALOGUE)
    sku = CATALOGUE[0].sku
    admin_conn.execute("UPDATE stock.products SET on_hand = 0, received = 0 WHERE sku = %s", (sku,))
    assert seed(admin_conn) == 0
    assert product(admin_conn, sku).on_hand == 0, "an existing product keeps its counts"
    for item in CATALOGUE[1:]:
        assert product(admin_conn, item.sku).received == item.on_hand
    assert_conserved(admin_conn)
