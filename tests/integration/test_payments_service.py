"""The payments service on the real runtime, broker and database, against the real provider.

Its consumer and its effect executor run in a thread, as ``run_service`` runs them; the
provider calls are effects, retried with short intervals here (``payments_settings``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from contracts.orders import Address, OrderCancelled, OrderCreated, OrderLine
from contracts.stock import PricedLine, StockReserved
from payments.bootstrap import build, http_provider
from payments.settings import PaymentsSettings
from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    EffectSettings,
    Envelope,
    KafkaSettings,
    ServiceRuntime,
    dead_letter_topic,
    ensure_topics,
    events_topic,
    faults,
)
from sagactl.cli import main as sagactl
from tests.fixtures.kafka import produce
from tests.integration.payment_provider_server import API_KEY, MERCHANT, running_provider
from tests.integration.tcp_proxy import proxy_to
from tests.support import ThreadedRunner, wait_until

pytestmark = pytest.mark.integration

TOTAL = 2599


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
        "provider_api_key": API_KEY,
        "retry_initial": 0.05,
        "charge_retry_max": 0.2,
        "undo_retry_max": 0.2,
        "kafka": kafka,
        "database": database,
        "consumer": ConsumerSettings(backoff_initial=0.05, backoff_max=0.5, max_attempts=3),
        "effects": EffectSettings(poll_interval=0.1, lease=5.0),
    }
    return PaymentsSettings(**(values | overrides))


@dataclass
class Running:
    runtime: ServiceRuntime
    exit_code: int | None = None
    runner: ThreadedRunner | None = None

    @property
    def alive(self) -> bool:
        return self.runner is not None and self.runner.thread.is_alive()


@contextmanager
def payments_service(settings: PaymentsSettings) -> Iterator[Running]:
    """The service's consumer and effect executor in a thread, wired by its composition root."""
    provider = http_provider(settings)
    running = Running(build(settings, provider))

    def run() -> None:
        try:
            running.exit_code = running.runtime.run_consumer(install_signal_handlers=False)
        finally:
            running.runtime.close()
            provider.close()

    with ThreadedRunner(run, running.runtime.stop_consumers) as running.runner:
        yield running


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


def effects(conn: psycopg.Connection, order_id: str) -> list[tuple[str, str, str]]:
    """(kind, idempotency key, status) of the order's effects, in the order requested."""
    return [
        (str(r[0]), str(r[1]), str(r[2]))
        for r in conn.execute(
            "SELECT kind, idempotency_key, status FROM payments.effects"
            " WHERE aggregate_id = %s ORDER BY id",
            (order_id,),
        )
    ]


def attempts(conn: psycopg.Connection, order_id: str, kind: str) -> int:
    row = conn.execute(
        "SELECT attempts FROM payments.effects WHERE aggregate_id = %s AND kind = %s",
        (order_id, kind),
    ).fetchone()
    assert row is not None
    return int(row[0])


def applied(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM payments.inbox").fetchone()
    assert row is not None
    return int(row[0])


def dead_letters(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM payments.dead_letters").fetchone()
    assert row is not None
    return int(row[0])


def ledger(provider_url: str) -> dict[str, list[dict[str, Any]]]:
    body: dict[str, list[dict[str, Any]]] = httpx.get(
        f"{provider_url}/ledger", headers=MERCHANT
    ).json()
    return body


CHARGE, VOID, REFUND = ("payments:o-1:charge", "payments:o-1:void", "payments:o-1:refund")


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
        assert effects(admin_conn, order_id) == [("charge", charge["idempotency_key"], "done")]


def test_a_crash_between_the_charge_and_its_recording_charges_once(
    database, kafka, provider_url, admin_conn, monkeypatch
):
    # The charge went through and the process died before recording it: the effect's
    # lease expires, and the next executor asks again with the same key.
    settings = payments_settings(
        database, kafka, provider_url, effects=EffectSettings(poll_interval=0.1, lease=1.0)
    )
    monkeypatch.setattr(faults, "_POINTS", {"raise:payments.after_charge": 1.0})
    with payments_service(settings) as dying:
        publish(kafka, order_created("o-1"), stock_reserved("o-1"))
        wait_until(lambda: not dying.alive, what="the service to die at the crash point")
    assert dying.exit_code == 1
    [charge] = ledger(provider_url)["charges"]
    assert charge["status"] == "approved", "the money moved"
    assert emitted(admin_conn, "o-1") == [] and effects(admin_conn, "o-1") == [
        ("charge", CHARGE, "running")
    ], "but nothing was recorded"

    monkeypatch.setattr(faults, "_POINTS", {})
    with payments_service(settings):
        wait_until(lambda: emitted(admin_conn, "o-1"), what="the charge recorded")

    assert ledger(provider_url)["charges"] == [charge], "exactly one charge"
    [(kind, event)] = emitted(admin_conn, "o-1")
    assert kind == "PaymentSucceeded" and event["charge_id"] == charge["charge_id"]
    assert attempts(admin_conn, "o-1", "charge") == 2, "asked twice, charged once"


def test_a_provider_outage_longer_than_a_handlers_retries_charges_once_and_dead_letters_nothing(
    database, kafka, provider_url, admin_conn
):
    with proxy_to(provider_url) as network:
        network.down()
        with payments_service(payments_settings(database, kafka, network.url)):
            publish(kafka, order_created("o-1"), stock_reserved("o-1"))
            # Before effects, a handler asked three times, then failed the payment.
            wait_until(lambda: network.refused > 8, what="the charge retried past that")
            assert emitted(admin_conn, "o-1") == [] and dead_letters(admin_conn) == 0
            network.up()
            wait_until(lambda: emitted(admin_conn, "o-1"), what="the charge")

    [charge] = ledger(provider_url)["charges"]
    [(kind, event)] = emitted(admin_conn, "o-1")
    assert (kind, event["charge_id"]) == ("PaymentSucceeded", charge["charge_id"])
    assert attempts(admin_conn, "o-1", "charge") > 8
    assert dead_letters(admin_conn) == 0


def test_an_order_cancelled_before_stock_reserved_is_never_charged(
    database, kafka, provider_url, admin_conn
):
    with payments_service(payments_settings(database, kafka, provider_url)):
        publish(kafka, order_created("o-1"), order_cancelled("o-1"))
        wait_until(lambda: applied(admin_conn) == 2, what="created and cancelled applied")
        publish(kafka, stock_reserved("o-1"))
        wait_until(lambda: applied(admin_conn) == 3, what="the late reservation applied")

    assert ledger(provider_url)["charges"] == []
    assert emitted(admin_conn, "o-1") == [] and effects(admin_conn, "o-1") == []
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
    assert effects(admin_conn, "o-1") == [("charge", CHARGE, "done")]
    row = payment(admin_conn, "o-1")
    assert row is not None
    assert (row["status"], row["failure_code"], row["cancelled"]) == ("failed", reason_code, True)


def test_a_cancelled_paid_order_is_refunded_once(database, kafka, provider_url, admin_conn):
    with payments_service(payments_settings(database, kafka, provider_url)):
        publish(kafka, order_created("o-1"), stock_reserved("o-1"))
        wait_until(lambda: emitted(admin_conn, "o-1"), what="the charge")
        # Two distinct cancellation events (not a redelivery the inbox would drop).
        publish(kafka, order_cancelled("o-1", "APPROVED"), order_cancelled("o-1", "APPROVED"))
        wait_until(lambda: len(emitted(admin_conn, "o-1")) == 2, what="the refund")
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
    assert effects(admin_conn, "o-1") == [("charge", CHARGE, "done"), ("refund", REFUND, "done")]


def test_an_unreachable_provider_fails_the_payment_in_time_and_the_void_waits_for_it(
    database, kafka, provider_url, admin_conn
):
    with proxy_to(provider_url) as network:
        network.down()
        settings = payments_settings(database, kafka, network.url, charge_deadline=1.0)
        with payments_service(settings):
            publish(kafka, order_created("o-1"), stock_reserved("o-1"))
            wait_until(lambda: emitted(admin_conn, "o-1"), what="the verdict")
            publish(kafka, order_cancelled("o-1"))
            wait_until(lambda: applied(admin_conn) == 3, what="the cancellation applied")
            refused = network.refused
            # The charge's outcome is unknown: the void is retried past the charge's
            # deadline, never dead-lettered, since a charge may exist.
            wait_until(lambda: network.refused > refused + 9, what="the void retried")
            assert dead_letters(admin_conn) == 0, "an outage is not poison"
            network.up()
            wait_until(
                lambda: (
                    (row := payment(admin_conn, "o-1")) is not None and row["status"] == "voided"
                ),
                what="the void",
            )

    [(kind, event)] = emitted(admin_conn, "o-1")
    assert (kind, event["reason_code"]) == ("PaymentFailed", "payment_provider_error")
    book = ledger(provider_url)
    assert book["charges"] == [] and [v["idempotency_key"] for v in book["voids"]] == [CHARGE]
    assert effects(admin_conn, "o-1") == [("charge", CHARGE, "failed"), ("void", VOID, "done")]
    assert dead_letters(admin_conn) == 0


def test_a_charge_whose_answer_timed_out_is_found_and_refunded_on_cancellation(
    database, kafka, admin_conn
):
    # tok_slow takes 3 s at the provider; payments gives up on each request after 0.2 s
    # and on the charge after 1 s, so it never hears of it. The void waits at the
    # provider for the charge in flight, and finds it.
    with running_provider(database.url, slow_seconds=3.0) as provider_url:
        settings = payments_settings(
            database, kafka, provider_url, provider_timeout=0.2, charge_deadline=1.0
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
    assert dead_letters(admin_conn) == 0


def test_a_charge_still_in_transit_when_the_order_is_cancelled_is_refused_when_it_lands(
    database, kafka, provider_url, admin_conn
):
    # Every charge request is held in the network (the proxy) until payments has given
    # up on the charge, failed the payment and voided the key; then they land. A lookup
    # at cancellation time finds nothing: only a fence at the provider keeps the late
    # charges from taking money that nobody will ever refund.
    with proxy_to(provider_url) as network:
        settings = payments_settings(
            database, kafka, network.url, provider_timeout=0.5, charge_deadline=1.0
        )
        network.hold(b"POST /charges HTTP/1.1")
        with payments_service(settings):
            publish(kafka, order_created("o-1"), stock_reserved("o-1"))
            wait_until(lambda: emitted(admin_conn, "o-1"), what="the verdict")
            [(kind, event)] = emitted(admin_conn, "o-1")
            assert (kind, event["reason_code"]) == ("PaymentFailed", "payment_provider_error")
            tried = attempts(admin_conn, "o-1", "charge")
            wait_until(lambda: len(network.held) == tried, what="every attempt held")

            network.stop_holding()
            publish(kafka, order_cancelled("o-1"))
            wait_until(lambda: ("void", VOID, "done") in effects(admin_conn, "o-1"), what="void")
            network.release()
            wait_until(
                lambda: (
                    len(network.late_answers) == tried
                    and all(a.endswith(b"}") for a in network.late_answers)
                ),
                what="the late charges answered",
            )

    book = ledger(provider_url)
    assert book["charges"] == [], "the late charges were refused"
    assert all(b"409" in answer.split(b"\r\n", 1)[0] for answer in network.late_answers)
    assert all(b"charge_voided" in answer for answer in network.late_answers)
    assert [v["idempotency_key"] for v in book["voids"]] == [CHARGE]
    assert [kind for kind, _ in emitted(admin_conn, "o-1")] == ["PaymentFailed"]
    row = payment(admin_conn, "o-1")
    assert row is not None and (row["status"], row["cancelled"]) == ("voided", True)
    assert dead_letters(admin_conn) == 0


def test_a_refund_is_retried_through_an_outage_then_waits_for_an_operator_and_goes_once(
    database, kafka, provider_url, admin_conn, monkeypatch
):
    with proxy_to(provider_url) as network:
        settings = payments_settings(database, kafka, network.url, undo_deadline=5.0)
        with payments_service(settings):
            publish(kafka, order_created("o-1"), stock_reserved("o-1"))
            wait_until(lambda: emitted(admin_conn, "o-1"), what="the charge")
            network.down()
            publish(kafka, order_cancelled("o-1", "APPROVED"))
            # Retried past what a handler used to try (nine refusals fit well within the
            # deadline, even on a loaded machine), and never dead-lettered ...
            wait_until(lambda: network.refused > 8, what="the refund retried")
            assert dead_letters(admin_conn) == 0, "an outage is not poison"
            # ... until its deadline: then it waits, visibly, for an operator.
            wait_until(
                lambda: ("refund", REFUND, "failed") in effects(admin_conn, "o-1"),
                what="the refund's deadline",
            )
            row = payment(admin_conn, "o-1")
            assert row is not None
            assert (row["status"], row["cancelled"], row["refund_id"]) == ("charged", True, None)

            network.up()
            monkeypatch.setenv("DATABASE_URL", database.url)
            effect_id = admin_conn.execute(
                "SELECT id FROM payments.effects WHERE idempotency_key = %s", (REFUND,)
            ).fetchone()[0]
            argv = ["effects", "retry", "--service", "payments", str(effect_id)]
            assert sagactl([*argv, "--yes", "--reason", "provider back", "--actor", "ada"]) == 0
            wait_until(lambda: len(emitted(admin_conn, "o-1")) == 2, what="the refund")

    [charge] = ledger(provider_url)["charges"]
    [refund] = ledger(provider_url)["refunds"]
    assert refund["charge_id"] == charge["charge_id"]
    assert [kind for kind, _ in emitted(admin_conn, "o-1")] == [
        "PaymentSucceeded",
        "PaymentRefunded",
    ]
    row = payment(admin_conn, "o-1")
    assert row is not None and (row["status"], row["refund_id"]) == (
        "refunded",
        refund["refund_id"],
    )
    assert effects(admin_conn, "o-1")[-1] == ("refund", REFUND, "done")
    assert dead_letters(admin_conn) == 0
