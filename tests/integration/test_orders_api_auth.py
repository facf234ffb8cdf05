"""Who may do what with the orders API, on the real database: a customer's orders are theirs
alone, an operator reads any, and a caller who proves nothing gets a 401 before any query."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from orders.api import create_app
from saga_harness.system import free_port
from saga_runtime import (
    AuthSettings,
    DatabaseSettings,
    KafkaSettings,
    Outbox,
    TokenVerifier,
    UnitOfWorkFactory,
    create_pool,
    events_topic,
    mint_token,
)
from tests.integration.test_orders_api import AUTH, TOKENS, order_body, orders_app, outbox

pytestmark = pytest.mark.integration

ADA, BOB = TOKENS.customer("c-ada"), TOKENS.customer("c-bob")
OPERATOR = TOKENS.operator("ops-1")


def factory_for(database: DatabaseSettings, kafka: KafkaSettings) -> UnitOfWorkFactory:
    return UnitOfWorkFactory(
        pool=create_pool(database, role="orders", name="orders-auth-test"),
        outbox=Outbox(schema="orders", topic=events_topic("orders", kafka.topic_prefix)),
        producer="orders",
    )


@pytest.fixture
def client(database: DatabaseSettings, kafka: KafkaSettings) -> Iterator[TestClient]:
    factory = factory_for(database, kafka)
    with TestClient(orders_app(factory), raise_server_exceptions=False) as test_client:
        yield test_client
    factory.pool.close()


def place(client: TestClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """Place an order as the token's customer (the body names one only when told to)."""
    body = order_body(**overrides)
    if "customer_id" not in overrides:
        del body["customer_id"]
    response = client.post("/orders", json=body, headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_order_is_placed_for_the_tokens_customer(client: TestClient) -> None:
    body = order_body()
    del body["customer_id"]
    response = client.post("/orders", json=body, headers=ADA)
    assert response.status_code == 202, response.text
    assert response.json()["customer_id"] == "c-ada"
    assert place(client, ADA, customer_id="c-ada")["customer_id"] == "c-ada"


def test_a_body_naming_another_customer_is_a_403_and_stores_nothing(
    client: TestClient, admin_conn: psycopg.Connection
) -> None:
    response = client.post("/orders", json=order_body(customer_id="c-bob"), headers=ADA)
    assert response.status_code == 403
    assert response.json() == {"detail": "customer_id is not the token's customer"}
    assert outbox(admin_conn) == []


def test_another_customers_order_is_not_found_to_read_or_cancel(
    client: TestClient, admin_conn: psycopg.Connection
) -> None:
    order = place(client, ADA)
    url = f"/orders/{order['order_id']}"
    assert client.get(url, headers=ADA).status_code == 200
    for response in (client.get(url, headers=BOB), client.post(f"{url}/cancel", headers=BOB)):
        assert response.status_code == 404
        assert response.json() == {"detail": "order not found"}  # as for an unknown id
    assert [e.event_type for e in outbox(admin_conn)] == ["OrderCreated"], "nothing cancelled"
    assert client.get(url, headers=ADA).json()["status"] == "PENDING"
    assert client.post(f"{url}/cancel", headers=ADA).status_code == 202


def test_a_customer_lists_only_their_own_orders(client: TestClient) -> None:
    ada = {place(client, ADA)["order_id"] for _ in range(2)}
    bob = place(client, BOB)["order_id"]
    listed = client.get("/orders", headers=ADA).json()["items"]
    assert {o["order_id"] for o in listed} == ada
    own = client.get("/orders", params={"customer_id": "c-ada"}, headers=ADA)
    assert {o["order_id"] for o in own.json()["items"]} == ada
    snooping = client.get("/orders", params={"customer_id": "c-bob"}, headers=ADA)
    assert snooping.status_code == 403
    assert bob not in snooping.text


def test_an_operator_reads_any_order_but_places_and_cancels_none(client: TestClient) -> None:
    order = place(client, ADA)
    url = f"/orders/{order['order_id']}"
    assert client.get(url, headers=OPERATOR).json()["order_id"] == order["order_id"]
    listed = client.get("/orders", params={"customer_id": "c-ada"}, headers=OPERATOR)
    assert [o["order_id"] for o in listed.json()["items"]] == [order["order_id"]]
    for response in (
        client.post("/orders", json=order_body(), headers=OPERATOR),
        client.post(f"{url}/cancel", headers=OPERATOR),
    ):
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert response.json() == {"detail": "this needs a token with the scope customer"}


def test_a_token_with_neither_scope_is_a_403(client: TestClient) -> None:
    nobody = {"Authorization": f"Bearer {mint_token(AUTH, subject='c-ada', scopes=[])}"}
    for method, url in [("GET", "/orders"), ("GET", "/orders/x"), ("POST", "/orders/x/cancel")]:
        assert client.request(method, url, headers=nobody).status_code == 403, url


def test_idempotency_keys_are_each_customers_own(
    client: TestClient, admin_conn: psycopg.Connection
) -> None:
    key = {"Idempotency-Key": "same-key"}
    ada = place(client, {**ADA, **key}, customer_id="c-ada")
    bob = place(client, {**BOB, **key}, customer_id="c-bob")
    assert ada["order_id"] != bob["order_id"]
    assert bob["customer_id"] == "c-bob"
    assert place(client, {**ADA, **key}, customer_id="c-ada")["order_id"] == ada["order_id"]
    assert len(outbox(admin_conn)) == 2


CALLS = [
    ("POST", "/orders", order_body()),
    ("GET", "/orders/o-1", None),
    ("GET", "/orders", None),
    ("POST", "/orders/o-1/cancel", None),
]


def bad_credentials() -> list[tuple[dict[str, str], str | None]]:
    expired = mint_token(AUTH, subject="c-ada", scopes=["customer"], ttl_seconds=1, now=1e9)
    foreign = jwt.encode(
        {"sub": "c-ada", "scope": "customer", "iss": "saga-outbox", "aud": "saga-outbox"},
        "someone-elses-secret-of-enough-length",
        algorithm="HS256",
    )
    return [
        ({}, None),
        ({"Authorization": "Bearer not.a.jwt"}, "the token is malformed"),
        ({"Authorization": f"Bearer {expired}"}, "the token has expired"),
        ({"Authorization": f"Bearer {foreign}"}, "the token's signature does not verify"),
    ]


def test_no_valid_token_is_a_401_before_any_query(kafka: KafkaSettings) -> None:
    """Against a database nobody listens on: any query would be a 503, so a 401 proves the
    token was refused first."""
    dead = DatabaseSettings(
        url=f"postgresql://postgres@127.0.0.1:{free_port()}/saga",
        connect_timeout=1,
        pool_min_size=0,
    )
    pool = create_pool(dead, role=None, name="orders-auth-dead-db")
    factory = UnitOfWorkFactory(
        pool=pool,
        outbox=Outbox(schema="orders", topic=events_topic("orders", kafka.topic_prefix)),
        producer="orders",
    )
    try:
        with TestClient(orders_app(factory), raise_server_exceptions=False) as dead_client:
            for headers, reason in bad_credentials():
                for method, url, body in CALLS:
                    response = dead_client.request(method, url, json=body, headers=headers)
                    assert response.status_code == 401, (method, url, response.text)
                    challenge = response.headers["www-authenticate"]
                    assert challenge.startswith('Bearer realm="saga-outbox"')
                    if reason is not None:
                        assert response.json() == {"detail": reason}
                        assert 'error="invalid_token"' in challenge
    finally:
        pool.close()


def test_an_identity_providers_tokens_verify_with_its_jwks(
    database: DatabaseSettings, kafka: KafkaSettings, tmp_path: Path
) -> None:
    """A real deployment: RS256 tokens from an issuer of its own, public keys in a JWKS file."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(private.public_key())), "kid": "2026-12"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    settings = AuthSettings(
        jwks_file=tmp_path / "jwks.json", issuer="https://id.example", audience="shop"
    )
    now = int(time.time())
    claims = {"iss": "https://id.example", "aud": "shop", "sub": "c-ada", "scope": "customer"}
    token = jwt.encode(
        {**claims, "iat": now, "exp": now + 300}, private, algorithm="RS256",
        headers={"kid": "2026-12"},
    )  # fmt: skip
    factory = factory_for(database, kafka)
    try:
        app = create_app(factory, TokenVerifier.from_settings(settings))
        with TestClient(app, raise_server_exceptions=False) as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert place(client, headers)["customer_id"] == "c-ada"
            ours = client.get("/orders", headers=ADA)  # HS256: not accepted by this deployment
            assert ours.status_code == 401
            assert ours.json() == {"detail": "the token's algorithm is not accepted"}
    finally:
        factory.pool.close()
