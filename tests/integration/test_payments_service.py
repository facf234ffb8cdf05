"""The payments service on the real runtime, broker and database, against the real provider."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from contracts.orders import Address, OrderCancelled, OrderCreated, OrderLine
from contracts.stock import PricedLine, StockReserved
from payments import handlers
from payments.bootstrap import build, http_provider
from payments.provider import RetryPolicy
from payments.settings import PaymentsSettings
from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    ServiceRuntime,
    dead_letter_topic,
    ensure_topics,
    events_topic,
)
from tests.fixtures.kafka import produce
from tests.integration.payment_provider_server import running_provider
from tests.integration.tcp_proxy import proxy_to
from tests.support import ThreadedRunner, wait_until

pytestmark = pytest.mark.integration

TOTAL = 2599


class Killed(Exception):
    """Stands for the process dying inside a transaction."""


@pytest.fixture
def provider_url(database: DatabaseSettings) -> Iterator[str]:
    with running_provider(database.url, slow_seconds=1.0) as url:
        yield url


@pytest.fixture(autouse=True)
def topics(kafka: KafkaSettings) -> None:
    ensure_topics(
        kafka,
        [events_topic(s, kafka.topic_prefix) for s in ("orders", "stock", "payments")]
        + [dead_letter_topic("payments", kafka.topic_prefix)],
    )


def payments_settings(
    database: DatabaseSettings, kafka: KafkaSettings, provider_url: str, **overrides: Any
) -> PaymentsSettings:
    values: dict[str, Any] = {
        "provider_url": provider_url,
        "provider_backoff": 0.05,
        "kafka": kafka,
        "database": database,
        "consumer": ConsumerSettings(backoff_initial=0.05, backoff_max=0.5, max_attempts=3),
    }
    return PaymentsSettings(**(values | overrides))


@contextmanager
def payments_service(settings: PaymentsSettings) -> Iterator[ServiceRuntime]:
    """The service's consumer in a thread, wired by its own composition root."""
    provider = http_provider(settings)
    runtime = build(settings, provider)
    assert runtime.runner is not None

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()
            provider.close()

    with ThreadedRunner(run, runtime.runner.stop):
        yield runtime


def order_created(order_id: str, card_token: str = "tok_visa") -> Envelope:
    return Envelope.new(
        OrderCreated(
            order_id=order_id,
            customer_id="c-1",
            email="ada@example.com",
            lines=[OrderLine(sku="SKU-1", quantity=1)],
            card_token=card_token,
            shipping_address=Address(
                name="Ada", line1="1 Main St", city="NYC", postal_code="10001", country="US"
            ),
        ),
        aggregate_id=order_id,
        producer="orders",
    )


def stock_reserved(order_id: str) -> Envelope:
    return Envelope.new(
        StockReserved(
            order_id=order_id,
            lines=[PricedLine(sku="SKU-1", quantity=1, unit_price_cents=TOTAL)],
            total_cents=TOTAL,
        ),
        aggregate_id=order_id,
        producer="stock",
    )


def order_cancelled(order_id: str, previous_status: str = "PENDING") -> Envelope:
    return Envelope.new(
        OrderCancelled(
            order_id=order_id,
            email="ada@example.com",
            reason_code="customer_request",
            reason="changed their mind",
            previous_status=previous_status,  # type: ignore[arg-type]
        ),
        aggregate_id=order_id,
        producer="orders",
    )


def publish(kafka: KafkaSettings, *envelopes: Envelope) -> None:
    for envelope in envelopes:
        produce(
            kafka,
            events_topic(envelope.producer, kafka.topic_prefix),
            [(envelope.aggregate_id.encode(), envelope.to_bytes())],
        )


def payment(conn: psycopg.Connection, order_id: str) -> dict[str, Any] | None:
    cur = conn.execute(
        "SELECT status, card_token, amount_cents, cancelled, charge_id, refund_id, failure_code"
        " FROM payments.payments WHERE order_id = %s",
        (order_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def emitted(conn: psycopg.Connection, order_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r[0], r[1]["payload"])
        for r in conn.execute(
            "SELECT event_type, envelope FROM payments.outbox WHERE aggregate_id = %s ORDER BY id",
            (order_id,),
        )
    ]


def applied(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM payments.inbox").fetchone()
    assert row is not None
    return int(row[0])


def ledger(provider_url: str) -> dict[str, list[dict[str, Any]]]:
    body: dict[str, list[dict[str, Any]]] = httpx.get(f"{provider_url}/ledger").json()
    return body


def test_an_order_is_charged_once_card_and_amount_are_known_in_either_order(
    database, kafka, provider_url, admin_conn
):
    with payments_service(payments_settings(database, kafka, provider_url)):
        publish(kafka, stock_reserved("o-1"), order_created("o-1"))
        publish(kafka, order_created("o-2"), stock_reserved("o-2"))
        wait_until(
            lambda: all(emitted(admin_conn, o) for o in ("o-1", "o-2")), what="both verdicts"
        )

    charges = {c["order_id"]: c for c in ledger(provider_url)["charges"]}
    assert set(charges) == {"o-1", "o-2"}
    for order_id, charge in charges.items():
        assert charge["status"] == "approved" and charge["amount_cents"] == TOTAL
        assert charge["idempotency_key"] == f"payments:{order_id}:charge"
        [(kind, event)] = emitted(admin_conn, order_id)
        assert kind == "PaymentSucceeded"
        assert (event["charge_id"], event["amount_cents"]) == (charge["charge_id"], TOTAL)
        row = payment(admin_conn, order_id)
        assert row is not None
        assert (row["status"], row["charge_id"]) == ("charged", charge["charge_id"])


def test_stock_reserved_redelivered_after_an_uncommitted_charge_charges_once(
    database, kafka, provider_url, admin_conn
):
    settings = payments_settings(database, kafka, provider_url)
    with payments_service(settings) as runtime:
        publish(kafka, order_created("o-1"))
        wait_until(lambda: payment(admin_conn, "o-1"), what="the card recorded")

        # The first delivery: the provider charges, then the process dies before commit.
        reserved = stock_reserved("o-1")
        provider = http_provider(settings)
        with pytest.raises(Killed), runtime.uow_factory.begin(cause=reserved) as uow:
            handlers.on_stock_reserved(uow, reserved, provider=provider, retry=RetryPolicy())
            raise Killed("before commit")
        provider.close()
        [charge] = ledger(provider_url)["charges"]
        assert charge["status"] == "approved", "the money moved"
        row = payment(admin_conn, "o-1")
        assert row is not None and row["status"] == "awaiting", "but nothing was committed"
        assert emitted(admin_conn, "o-1") == []

        publish(kafka, reserved)  # Kafka delivers it again: the offset was never committed
        wait_until(lambda: emitted(admin_conn, "o-1"), what="the redelivery applied")

    assert ledger(provider_url)["charges"] == [charge], "exactly one charge"
    [(kind, event)] = emitted(admin_conn, "o-1")
    assert kind == "PaymentSucceeded" and event["charge_id"] == charge["charge_id"]
    row = payment(admin_conn, "o-1")
    assert row is not None and row["charge_id"] == charge["charge_id"]


def test_an_order_cancelled_before_stock_reserved_is_never_charged(
    database, kafka, provider_url, admin_conn
):
    with payments_service(payments_settings(database, kafka, provider_url)):
        publish(kafka, order_created("o-1"), order_cancelled("o-1"))
        wait_until(lambda: applied(admin_conn) == 2, what="created and cancelled applied")
        publish(kafka, stock_reserved("o-1"))
        wait_until(lambda: applied(admin_conn) == 3, what="the late reservation applied")

    assert ledger(provider_url)["charges"] == []
    assert emitted(admin_conn, "o-1") == []
    row = payment(admin_conn, "o-1")
    assert row is not None
    assert (row["status"], row["cancelled"], row["amount_cents"]) == ("voided", True, TOTAL)


@pytest.mark.parametrize(
    ("card_token", "reason_code"),
    [("tok_decline", "payment_declined"), ("tok_insufficient_funds", "insufficient_funds")],
)
def test_a_declined_card_fails_the_payment_and_its_cancellation_refunds_nothing(
    database, kafka, provider_url, admin_conn, card_token, reason_code
):
    with payments_service(payments_settings(database, kafka, provider_url)):
        publish(kafka, order_created("o-1", card_token), stock_reserved("o-1"))
        wait_until(lambda: emitted(admin_conn, "o-1"), what="the verdict")
        publish(kafka, order_cancelled("o-1"))
        wait_until(lambda: applied(admin_conn) == 3, what="the cancellation applied")

    [(kind, event)] = emitted(admin_conn, "o-1")
    assert (kind, event["reason_code"]) == ("PaymentFailed", reason_code)
    assert ledger(provider_url)["refunds"] == []
    row = payment(admin_conn, "o-1")
    assert row is not None
    assert (row["status"], row["failure_code"], row["cancelled"]) == ("failed", reason_code, True)


def test_a_cancelled_paid_order_is_refunded_once(database, kafka, provider_url, admin_conn):
    with payments_service(payments_settings(database, kafka, provider_url)):
        publish(kafka, order_created("o-1"), stock_reserved("o-1"))
        wait_until(lambda: emitted(admin_conn, "o-1"), what="the charge")
        # Two distinct cancellation events (not a redelivery the inbox would drop).
        publish(kafka, order_cancelled("o-1", "APPROVED"), order_cancelled("o-1", "APPROVED"))
        wait_until(lambda: applied(admin_conn) == 4, what="both cancellations applied")

    [charge] = ledger(provider_url)["charges"]
    [refund] = ledger(provider_url)["refunds"]
    assert refund["charge_id"] == charge["charge_id"] and refund["amount_cents"] == TOTAL
    assert [kind for kind, _ in emitted(admin_conn, "o-1")] == [
        "PaymentSucceeded",
        "PaymentRefunded",
    ]
    _, event = emitted(admin_conn, "o-1")[1]
    assert (event["charge_id"], event["refund_id"]) == (charge["charge_id"], refund["refund_id"])
    row = payment(admin_conn, "o-1")
    assert row is not None and (row["status"], row["refund_id"]) == (
        "refunded",
        refund["refund_id"],
    )


def test_a_provider_that_keeps_failing_fails_the_payment_rather_than_the_order_waiting(
    database, kafka, provider_url, admin_conn
):
    settings = payments_settings(database, kafka, provider_url, provider_attempts=4)
    with payments_service(settings):
        publish(kafka, order_created("o-1", "tok_error"), stock_reserved("o-1"))
        wait_until(lambda: emitted(admin_conn, "o-1"), what="the verdict")
        publish(kafka, order_cancelled("o-1"))
        wait_until(lambda: applied(admin_conn) == 3, what="the cancellation applied")

    [(kind, event)] = emitted(admin_conn, "o-1")
    assert (kind, event["reason_code"]) == ("PaymentFailed", "payment_provider_error")
    attempts = admin_conn.execute("SELECT attempts FROM provider.charge_attempts").fetchall()
    assert attempts == [(4,)], "asked as often as configured, in one delivery"
    book = ledger(provider_url)
    assert (book["charges"], book["refunds"]) == ([], [])
    assert [v["idempotency_key"] for v in book["voids"]] == ["payments:o-1:charge"]
    row = payment(admin_conn, "o-1")
    assert row is not None and (row["status"], row["cancelled"]) == ("voided", True)
    assert admin_conn.execute("SELECT count(*) FROM payments.dead_letters").fetchone() == (0,)


def test_a_charge_whose_answer_timed_out_is_found_and_refunded_on_cancellation(
    database, kafka, admin_conn
):
    # tok_slow takes 3 s at the provider; payments gives up on each request after 0.2 s,
    # so it never hears of the charge. Its lookup waits for the charge in flight, so the
    # runtime may retry the cancellation a few times meanwhile: allow for that.
    with running_provider(database.url, slow_seconds=3.0) as provider_url:
        settings = payments_settings(
            database,
            kafka,
            provider_url,
            provider_timeout=0.2,
            provider_attempts=2,
            consumer=ConsumerSettings(backoff_initial=0.05, backoff_max=0.5, max_attempts=100),
        )
        with payments_service(settings):
            publish(kafka, order_created("o-1", "tok_slow"), stock_reserved("o-1"))
            wait_until(lambda: emitted(admin_conn, "o-1"), what="the verdict")
            [(kind, event)] = emitted(admin_conn, "o-1")
            assert (kind, event["reason_code"]) == ("PaymentFailed", "payment_provider_error")

            publish(kafka, order_cancelled("o-1"))
            wait_until(lambda: len(emitted(admin_conn, "o-1")) == 2, what="the refund")
        book = ledger(provider_url)

    [charge], [refund] = book["charges"], book["refunds"]
    assert charge["status"] == "approved", "the provider charged although payments never heard"
    assert refund["charge_id"] == charge["charge_id"]
    kind, event = emitted(admin_conn, "o-1")[1]
    assert (kind, event["refund_id"]) == ("PaymentRefunded", refund["refund_id"])
    row = payment(admin_conn, "o-1")
    assert row is not None
    assert (row["status"], row["charge_id"]) == ("refunded", charge["charge_id"])
    assert admin_conn.execute("SELECT count(*) FROM payments.dead_letters").fetchone() == (0,)


def unrefunded_charges(book: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Approved charges without a refund (for a cancelled order, each is money kept wrongly)."""
    refunded = {r["charge_id"] for r in book["refunds"]}
    return [
        c for c in book["charges"] if c["status"] == "approved" and c["charge_id"] not in refunded
    ]


def dead_letters(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM payments.dead_letters").fetchone()
    assert row is not None
    return int(row[0])


def test_a_charge_still_in_transit_when_the_order_is_cancelled_is_refused_when_it_lands(
    database, kafka, provider_url, admin_conn
):
    # Both charge requests are held in the network (the proxy) until payments has given
    # up on them, failed the payment and handled the cancellation; then they land. A
    # lookup at cancellation time finds nothing: only a fence at the provider keeps the
    # late charge from taking money that nobody will ever refund.
    with proxy_to(provider_url) as network:
        settings = payments_settings(
            database,
            kafka,
            network.url,
            provider_timeout=0.5,
            provider_attempts=2,
            # Only the held charges must time out: a void slowed by a busy host is retried.
            consumer=ConsumerSettings(backoff_initial=0.05, backoff_max=0.5, max_attempts=1000),
        )
        network.hold(b"POST /charges HTTP/1.1")
        with payments_service(settings):
            publish(kafka, order_created("o-1"), stock_reserved("o-1"))
            wait_until(lambda: emitted(admin_conn, "o-1"), what="the verdict")
            [(kind, event)] = emitted(admin_conn, "o-1")
            assert (kind, event["reason_code"]) == ("PaymentFailed", "payment_provider_error")
            assert len(network.held) == 2, "both attempts are still on their way"

            network.stop_holding()
            publish(kafka, order_cancelled("o-1"))
            wait_until(lambda: applied(admin_conn) == 3, what="the cancellation applied")
            network.release()
            wait_until(
                lambda: (
                    len(network.late_answers) == 2
                    and all(a.endswith(b"}") for a in network.late_answers)
                ),
                what="the late charges answered",
            )

    book = ledger(provider_url)
    assert unrefunded_charges(book) == [], "a cancelled order keeps no money"
    assert book["charges"] == [], "the late charges were refused"
    assert all(b"409" in answer.split(b"\r\n", 1)[0] for answer in network.late_answers)
    assert all(b"charge_voided" in answer for answer in network.late_answers)
    assert [v["idempotency_key"] for v in book["voids"]] == ["payments:o-1:charge"]
    assert [kind for kind, _ in emitted(admin_conn, "o-1")] == ["PaymentFailed"]
    row = payment(admin_conn, "o-1")
    assert row is not None and (row["status"], row["cancelled"]) == ("voided", True)
    assert dead_letters(admin_conn) == 0


def test_a_refund_during_a_provider_outage_is_retried_until_it_goes_through(
    database, kafka, provider_url, admin_conn
):
    with proxy_to(provider_url) as network:
        settings = payments_settings(
            database,
            kafka,
            network.url,
            provider_attempts=2,
            # A budget far smaller than the outage: a refund is retried past it all the same.
            consumer=ConsumerSettings(
                backoff_initial=0.05,
                backoff_max=0.5,
                retry_backoff_max=0.5,
                retry_for=0.5,
                max_attempts=2,
            ),
        )
        with payments_service(settings):
            publish(kafka, order_created("o-1"), stock_reserved("o-1"))
            wait_until(lambda: emitted(admin_conn, "o-1"), what="the charge")
            network.down()
            publish(kafka, order_cancelled("o-1", "APPROVED"))
            # More refused connections than the budget's attempts make: retried past it.
            wait_until(lambda: network.refused > 2 * 2 * 3, what="the refund retried")
            assert dead_letters(admin_conn) == 0, "an outage is not poison"
            network.up()
            wait_until(lambda: len(emitted(admin_conn, "o-1")) == 2, what="the refund")

    [charge] = ledger(provider_url)["charges"]
    [refund] = ledger(provider_url)["refunds"]
    assert refund["charge_id"] == charge["charge_id"]
    assert [kind for kind, _ in emitted(admin_conn, "o-1")] == [
        "PaymentSucceeded",
        "PaymentRefunded",
    ]
    assert dead_letters(admin_conn) == 0


def test_an_unreachable_provider_fails_the_payment_and_the_void_waits_for_it(
    database, kafka, provider_url, admin_conn
):
    with proxy_to(provider_url) as network:
        network.down()
        settings = payments_settings(
            database,
            kafka,
            network.url,
            consumer=ConsumerSettings(
                backoff_initial=0.05, backoff_max=0.5, retry_backoff_max=0.5, retry_for=0.5
            ),
        )
        with payments_service(settings):
            publish(kafka, order_created("o-1"), stock_reserved("o-1"))
            wait_until(lambda: emitted(admin_conn, "o-1"), what="the verdict")
            publish(kafka, order_cancelled("o-1"))
            refused = network.refused
            # The charge's outcome is unknown: the void is retried past any budget,
            # never dead-lettered, since a charge may exist and must not be forgotten.
            wait_until(lambda: network.refused > refused + 3 * 3, what="the void retried")
            assert dead_letters(admin_conn) == 0, "an outage is not poison"
            network.up()
            wait_until(
                lambda: (row := payment(admin_conn, "o-1")) is not None and row["cancelled"],
                what="the void",
            )

    [(kind, event)] = emitted(admin_conn, "o-1")
    assert (kind, event["reason_code"]) == ("PaymentFailed", "payment_provider_error")
    book = ledger(provider_url)
    assert book["charges"] == [] and [v["idempotency_key"] for v in book["voids"]] == [
        "payments:o-1:charge"
    ]
    assert dead_letters(admin_conn) == 0
