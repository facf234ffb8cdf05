"""The orders REST API against the real database (the saga itself runs in the e2e tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orders.api import create_app
from saga_runtime import (
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    Outbox,
    UnitOfWorkFactory,
    create_pool,
    events_topic,
)
from sagactl.system import order_request

pytestmark = pytest.mark.integration


def order_body(**overrides: Any) -> dict[str, Any]:
    return order_request(
        **{
            "items": [{"sku": "BOOK-1", "quantity": 2}, {"sku": "MUG-1", "quantity": 1}],
            **overrides,
        }
    )


@pytest.fixture
def client(database: DatabaseSettings, kafka: KafkaSettings) -> Iterator[TestClient]:
    pool = create_pool(database, role="orders", name="orders-api-test")
    factory = UnitOfWorkFactory(
        pool=pool,
        outbox=Outbox(schema="orders", topic=events_topic("orders", kafka.topic_prefix)),
        producer="orders",
    )
    with TestClient(create_app(factory), raise_server_exceptions=False) as test_client:
        yield test_client
    pool.close()


def outbox(conn: psycopg.Connection) -> list[Envelope]:
    return [
        Envelope.model_validate(row[0])
        for row in conn.execute("SELECT envelope FROM orders.outbox ORDER BY id")
    ]


def test_submitting_an_order_stores_it_and_emits_order_created(client, admin_conn):
    response = client.post("/orders", json=order_body())
    assert response.status_code == 202
    order = response.json()
    assert response.headers["location"] == f"/orders/{order['order_id']}"
    assert order["status"] == "PENDING"

    [created] = outbox(admin_conn)
    assert created.event_type == "OrderCreated"
    assert created.aggregate_id == order["order_id"]
    assert created.payload["card_token"] == "tok_visa"
    assert created.payload["lines"] == [
        {"sku": "BOOK-1", "quantity": 2},
        {"sku": "MUG-1", "quantity": 1},
    ]

    fetched = client.get(response.headers["location"]).json()
    assert fetched["status"] == "PENDING"
    assert [(t["event_type"], t["producer"]) for t in fetched["timeline"]] == [
        ("OrderCreated", "orders")
    ]
    assert "card_token" not in json.dumps(fetched)


def test_idempotency_key_returns_the_same_order_and_never_a_second_one(client, admin_conn):
    first = client.post("/orders", json=order_body(), headers={"Idempotency-Key": "k-1"})
    again = client.post("/orders", json=order_body(), headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["order_id"] == again.json()["order_id"]
    assert len(outbox(admin_conn)) == 1

    other_body = client.post(
        "/orders", json=order_body(customer_id="cust-2"), headers={"Idempotency-Key": "k-1"}
    )
    assert other_body.status_code == 409
    assert len(outbox(admin_conn)) == 1


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (order_body(items=[]), ["body", "items"]),
        (order_body(items=[{"sku": "A", "quantity": 0}]), ["body", "items", 0, "quantity"]),
        (order_body(email="not-an-email"), ["body", "email"]),
        (order_body(payment={}), ["body", "payment", "card_token"]),
        (order_body(shipping_address={"name": "x"}), ["body", "shipping_address", "line1"]),
        (order_body(unexpected=1), ["body", "unexpected"]),
    ],
)
def test_bad_input_gets_422_with_the_field_and_stores_nothing(client, admin_conn, body, location):
    response = client.post("/orders", json=body)
    assert response.status_code == 422
    assert location in [error["loc"] for error in response.json()["detail"]]
    assert outbox(admin_conn) == []


def test_unknown_order_is_404(client):
    assert client.get("/orders/nope").status_code == 404
    assert client.post("/orders/nope/cancel").status_code == 404


def test_customer_orders_are_paged_newest_first(client):
    ids = [
        client.post("/orders", json=order_body(customer_id="pager")).json()["order_id"]
        for _ in range(5)
    ]
    client.post("/orders", json=order_body(customer_id="someone-else"))
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"customer_id": "pager", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/orders", params=params).json()
        seen += [o["order_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert (
        client.get("/orders", params={"customer_id": "pager", "cursor": "garbage"}).status_code
        == 422
    )
    assert client.get("/orders").status_code == 422


def test_cancel_before_shipment_emits_order_cancelled_then_409(client, admin_conn):
    order_id = client.post("/orders", json=order_body()).json()["order_id"]
    cancelled = client.post(f"/orders/{order_id}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "CANCELLED"
    assert cancelled.json()["reason_code"] == "customer_request"
    events = outbox(admin_conn)
    assert [e.event_type for e in events] == ["OrderCreated", "OrderCancelled"]
    assert events[1].correlation_id == events[0].correlation_id
    assert client.post(f"/orders/{order_id}/cancel").status_code == 409


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        json_values,
        st.builds(
            lambda v, k: {**order_body(), k: v}, json_values, st.sampled_from(sorted(order_body()))
        ),
    ),
    key=st.one_of(
        st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
    ),
)
def test_no_input_gives_a_server_error(client, body, key):
    headers = (
        {"Idempotency-Key": key.encode("utf-8", "ignore").decode("latin-1", "ignore")}
        if key
        else {}
    )
    response = client.post("/orders", json=body, headers=headers)
    assert response.status_code < 500, response.text
