"""The orders REST API against the real database (the saga itself runs in the e2e tests)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from orders.api import create_app
from saga_harness.system import free_port, order_request
from saga_harness.tokens import Tokens
from saga_runtime import (
    AuthSettings,
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    Outbox,
    TokenVerifier,
    UnitOfWorkFactory,
    create_pool,
    events_topic,
)

pytestmark = pytest.mark.integration

AUTH = AuthSettings(jwt_secret=SecretStr("orders-api-test-secret-" + "x" * 16))
TOKENS = Tokens(AUTH)
CUSTOMER = order_request()["customer_id"]  # the default body's, whose token the client sends


def orders_app(factory: UnitOfWorkFactory) -> Any:
    return create_app(factory, TokenVerifier.from_settings(AUTH))


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
    with TestClient(
        orders_app(factory), raise_server_exceptions=False, headers=TOKENS.customer(CUSTOMER)
    ) as test_client:
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
        "/orders", json=order_body(email="other@example.com"), headers={"Idempotency-Key": "k-1"}
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
    pager = TOKENS.customer("pager")
    ids = [
        client.post("/orders", json=order_body(customer_id="pager"), headers=pager).json()[
            "order_id"
        ]
        for _ in range(5)
    ]
    client.post("/orders", json=order_body(), headers=TOKENS.customer("someone-else"))
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/orders", params=params, headers=pager).json()
        seen += [o["order_id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    garbage = client.get("/orders", params={"cursor": "garbage"}, headers=pager)
    assert garbage.status_code == 422
    operator = TOKENS.operator()
    assert client.get("/orders", headers=operator).status_code == 422  # whose orders?


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


# --- text that PostgreSQL or JSON cannot hold is a 422 naming the field -------------------------

TEXT_FIELDS: list[tuple[str | int, ...]] = [
    ("customer_id",),
    ("email",),
    ("items", 0, "sku"),
    ("payment", "card_token"),
    ("shipping_address", "name"),
    ("shipping_address", "line1"),
    ("shipping_address", "line2"),
    ("shipping_address", "city"),
    ("shipping_address", "postal_code"),
    ("shipping_address", "country"),
]
UNSTORABLE = {"nul": "a\x00b", "surrogate": "a\ud800b", "newline": "a\nb"}


def with_value(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


def post_raw(client: TestClient, body: Any, **headers: str) -> Any:
    # json.dumps escapes a lone surrogate as "\ud800", as a hostile client would send it.
    return client.post(
        "/orders", content=json.dumps(body), headers={"content-type": "application/json", **headers}
    )


def locs(response: Any) -> list[list[str | int]]:
    return [error["loc"] for error in response.json()["detail"]]


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
@pytest.mark.parametrize("path", TEXT_FIELDS, ids=lambda p: ".".join(map(str, p)))
def test_unstorable_text_in_any_body_field_is_a_422_naming_it(client, admin_conn, path, value):
    response = post_raw(client, with_value(order_body(), path, value))
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", *path]]
    assert outbox(admin_conn) == []


@pytest.mark.parametrize(
    ("method", "url", "loc"),
    [
        ("GET", "/orders/%00", ["path", "order_id"]),
        ("GET", "/orders/a%0Ab", ["path", "order_id"]),
        ("POST", "/orders/%00/cancel", ["path", "order_id"]),
        ("GET", "/orders?customer_id=%00", ["query", "customer_id"]),
        ("GET", "/orders?customer_id=c&cursor=%00", ["query", "cursor"]),
    ],
)
def test_unstorable_text_in_a_path_or_query_is_a_422_naming_it(client, method, url, loc):
    response = client.request(method, url)
    assert response.status_code == 422, response.text
    assert locs(response) == [loc]


@pytest.mark.parametrize("key", ["a\x00b", "a\x7fb", "key with spaces", "k" * 201])
def test_an_idempotency_key_outside_its_pattern_is_a_422(client, admin_conn, key):
    response = post_raw(client, order_body(), **{"Idempotency-Key": key})
    assert response.status_code == 422, response.text
    assert locs(response) == [["header", "Idempotency-Key"]]
    assert outbox(admin_conn) == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"customer_id": "\xff\xfe"}',  # not UTF-8
        b'{"customer_id": ' + b"9" * 5000 + b"}",  # past Python's int-from-text limit
        b'{"customer_id": NaN}',
        b"[" * 100_000,  # deeper than the JSON parser recurses
        b'{"customer_id": ',
    ],
    ids=["invalid-utf8", "huge-integer", "nan", "deep", "truncated"],
)
def test_a_body_that_cannot_be_parsed_is_a_422(client, admin_conn, raw):
    response = client.post("/orders", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert locs(response)[0][0] == "body"
    assert outbox(admin_conn) == []


def test_a_huge_number_in_a_number_field_is_a_422(client):
    body = order_body(items=[{"sku": "BOOK-1", "quantity": 10**40}])
    assert post_raw(client, body).status_code == 422
    raw = json.dumps(order_body()).replace('"quantity": 2', '"quantity": 1e999')
    response = client.post("/orders", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert locs(response) == [["body", "items", 0, "quantity"]]


def test_text_is_stored_as_sent_never_stripped(client):
    body = order_body(customer_id=" Zoë Ω ", shipping_address={**order_body()["shipping_address"]})
    body["shipping_address"]["name"] = "Zoë Ω"
    zoe = TOKENS.customer(" Zoë Ω ")
    response = post_raw(client, body, **zoe)
    assert response.status_code == 202, response.text
    stored = client.get(response.headers["location"], headers=zoe).json()
    assert stored["customer_id"] == " Zoë Ω "
    assert stored["shipping_address"]["name"] == "Zoë Ω"


any_text = st.text(
    st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff", "\x85", " ", "@"])),
    max_size=30,
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(TEXT_FIELDS), value=any_text)
# A final newline: refused by the server and by the schema (an ECMA-262 $ is the very end).
@example(path=("items", 0, "sku"), value="0\n")
@example(path=("customer_id",), value="ada\n")
def test_any_string_in_any_text_field_is_never_a_server_error(client, path, value):
    """Either accepted (and stored as sent) or a 422 that names the field; and the OpenAPI
    schema of the field says which: the e-mail's IDNA rule is the one thing a pattern cannot
    say (it is in the field's description), so there the schema is a necessary condition."""
    body = with_value(order_body(), path, value)
    valid_by_schema = schema_accepts(field_schema(client, path), value)
    # A customer id the schema accepts is one a token can name: place it as that customer.
    owner = value if path == ("customer_id",) and valid_by_schema else CUSTOMER
    response = post_raw(client, body, **TOKENS.customer(owner))
    assert response.status_code in (202, 422), response.text
    if response.status_code == 422:
        assert locs(response) == [["body", *path]], response.text
        if path != ("email",):
            assert not valid_by_schema, f"the schema accepts {value!r} in {path}"
    else:
        assert valid_by_schema, f"the schema refuses {value!r} in {path}, the server accepts it"
        stored = client.get(response.headers["location"], headers=TOKENS.customer(owner)).json()
        if path == ("customer_id",):
            assert stored["customer_id"] == value


def field_schema(client: TestClient, path: tuple[str | int, ...]) -> dict[str, Any]:
    """The OpenAPI schema of one string field of the order request."""
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            return resolve(schemas[schema["$ref"].rsplit("/", 1)[-1]])
        if "anyOf" in schema:  # an optional field: the non-null alternative
            return resolve(next(s for s in schema["anyOf"] if s.get("type") != "null"))
        return schema

    schema = resolve(schemas["OrderIn"])
    for step in path:
        schema = resolve(schema["items"] if isinstance(step, int) else schema["properties"][step])
    return schema


def schema_accepts(schema: dict[str, Any], value: str) -> bool:
    assert schema["type"] == "string"
    if re.search("[\ud800-\udfff]", value):
        return False  # a JSON Schema string is Unicode text, which has no lone surrogate
    # JSON Schema patterns are ECMA-262 regexes, whose $ is the end of the text; Python's
    # also matches before a final newline, and would accept "0\n" for "^[^\n]*$".
    pattern = re.sub(r"(?<!\\)\$$", r"\\Z", schema.get("pattern", ""))
    return (
        schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
        and re.search(pattern, value) is not None
    )


@pytest.mark.parametrize(
    "email",
    ["zoë@example.com", "ada@bücher.de", "用户@例子.广告", "a.b+c@xn--bcher-kva.de", "x@a-b.co"],
)
def test_internationalized_email_addresses_are_accepted(client, email):
    assert post_raw(client, order_body(email=email)).status_code == 202


@pytest.mark.parametrize(
    "email",
    [
        "plain",
        "a@b",
        "a@@b.com",
        "a@b@c.com",
        "a b@c.com",
        '"quoted"@c.com',
        "a(b)@c.com",
        "a;b@c.com",
        "[a]@c.com",
        "a\\b@c.com",
        "a@-bad.com",
        "a@bad-.com",
        "a@b_c.com",
        "a@b..com",
        "a@.b.com",
        "a@" + "x" * 64 + ".com",
        "x" * 65 + "@c.com",
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 60 + ".com",  # 258
        "a@" + "ü" * 60 + ".de",  # its label is longer than 63 once in punycode
        "a@\u0627\u0644a.com",  # right-to-left mixed with left-to-right: no IDNA
        "a@c.com\u3000",
    ],
)
def test_email_addresses_the_mailer_cannot_deliver_are_a_422(client, email):
    response = post_raw(client, order_body(email=email))
    assert response.status_code == 422, email
    assert locs(response) == [["body", "email"]]


def test_openapi_lists_every_status_each_operation_returns(client):
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        ("/orders", "post"): {"202", "401", "403", "409", "422", "503"},
        ("/orders", "get"): {"200", "401", "403", "422", "503"},
        ("/orders/{order_id}", "get"): {"200", "401", "403", "404", "422", "503"},
        ("/orders/{order_id}/cancel", "post"): {"202", "401", "403", "404", "409", "422", "503"},
    }
    for (path, method), statuses in expected.items():
        operation = paths[path][method]
        assert set(operation["responses"]) == statuses, (path, method)
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
        assert operation["security"] == [{"bearerJWT": []}], (path, method)


def test_an_unavailable_database_is_a_503_with_retry_after(kafka: KafkaSettings) -> None:
    # A real pool to a port nobody listens on: every request finds the database unavailable.
    dead = DatabaseSettings(
        url=f"postgresql://postgres@127.0.0.1:{free_port()}/saga",
        connect_timeout=1,
        pool_min_size=0,
    )
    pool = create_pool(dead, role=None, name="orders-api-dead-db")
    factory = UnitOfWorkFactory(
        pool=pool,
        outbox=Outbox(schema="orders", topic=events_topic("orders", kafka.topic_prefix)),
        producer="orders",
    )
    try:
        with TestClient(
            orders_app(factory), raise_server_exceptions=False, headers=TOKENS.customer(CUSTOMER)
        ) as dead_client:
            for method, url, body in [
                ("POST", "/orders", order_body()),
                ("GET", "/orders/o-1", None),
                ("GET", "/orders", None),
                ("POST", "/orders/o-1/cancel", None),
            ]:
                response = dead_client.request(method, url, json=body)
                assert response.status_code == 503, (method, url, response.text)
                assert int(response.headers["Retry-After"]) >= 1
    finally:
        pool.close()
