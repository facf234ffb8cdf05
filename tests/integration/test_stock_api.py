"""The stock HTTP API against the real database (FastAPI TestClient)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from contracts.orders import Address, OrderCreated, OrderLine
from saga_harness.tokens import Tokens
from saga_runtime import (
    AuthSettings,
    ConfigurationError,
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    ServiceRuntime,
    mint_token,
)
from stock import bootstrap, handlers
from stock.catalogue import CATALOGUE, seed
from stock.settings import StockSettings

pytestmark = pytest.mark.integration

AUTH = AuthSettings(jwt_secret=SecretStr("stock-api-test-secret-" + "x" * 16))
TOKENS = Tokens(AUTH)
OPERATOR = TOKENS.operator("ops-1")


@pytest.fixture
def runtime(database: DatabaseSettings, kafka: KafkaSettings) -> Iterator[ServiceRuntime]:
    runtime = bootstrap.build(StockSettings(kafka=kafka, database=database, auth=AUTH))
    try:
        yield runtime
    finally:
        runtime.close()


def client_for(runtime: ServiceRuntime, headers: dict[str, str]) -> TestClient:
    settings = StockSettings(auth=AUTH)
    # Server errors come back as responses, so that a 5xx is an assertion, not a crash.
    return TestClient(
        bootstrap.create_app(runtime, settings), raise_server_exceptions=False, headers=headers
    )


@pytest.fixture
def client(runtime: ServiceRuntime) -> Iterator[TestClient]:
    """An operator's client: it may count stock in."""
    with client_for(runtime, OPERATOR) as client:
        yield client


@pytest.fixture
def anonymous(runtime: ServiceRuntime) -> Iterator[TestClient]:
    with client_for(runtime, {}) as client:
        yield client


def conserved(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM stock.products"
        " WHERE received <> on_hand + reserved + sold - restocked OR received < 0"
    ).fetchone()
    return row is not None and row[0] == 0


def locs(response: Any) -> list[list[str | int]]:
    return [error["loc"] for error in response.json()["detail"]]


def test_get_lists_and_reads_products(client, admin_conn):
    assert client.get("/stock").json() == {"products": []}
    seed(admin_conn)
    listed = client.get("/stock").json()["products"]
    assert [p["sku"] for p in listed] == sorted(p.sku for p in CATALOGUE)

    first = CATALOGUE[0]
    response = client.get(f"/stock/{first.sku}")
    assert response.status_code == 200
    assert response.json() == {
        "sku": first.sku,
        "name": first.name,
        "price_cents": first.price_cents,
        "on_hand": first.on_hand,
        "reserved": 0,
        "sold": 0,
        "restocked": 0,
        "received": first.on_hand,
    }


def test_unknown_sku_is_404_and_a_malformed_one_422(client):
    response = client.get("/stock/NOPE-1")
    assert response.status_code == 404
    assert "NOPE-1" in response.json()["detail"]
    response = client.get(f"/stock/{quote('bad sku!', safe='')}")
    assert response.status_code == 422
    assert locs(response) == [["path", "sku"]]


def test_put_creates_then_counts_keeping_units_conserved(client, runtime, admin_conn):
    created = client.put("/stock/LAMP-9", json={"name": "Lamp", "price_cents": 990, "on_hand": 4})
    assert created.status_code == 201
    assert created.json()["received"] == 4

    # An order holds 3 of them; a recount of the shelf then finds 1 left (a write-off of 0).
    order = OrderCreated(
        order_id="o-1",
        customer_id="c-1",
        email="a@example.com",
        lines=[OrderLine(sku="LAMP-9", quantity=3)],
        card_token="tok_visa",
        shipping_address=Address(
            name="A", line1="1 Main St", city="NYC", postal_code="10001", country="US"
        ),
    )
    envelope = Envelope.new(order, aggregate_id="o-1", producer="orders")
    with runtime.uow_factory.begin(cause=envelope) as uow:
        handlers.on_order_created(uow, envelope)

    counted = client.put("/stock/LAMP-9", json={"on_hand": 10, "price_cents": 1_250})
    assert counted.status_code == 200
    assert counted.json() == {
        "sku": "LAMP-9",
        "name": "Lamp",
        "price_cents": 1_250,
        "on_hand": 10,
        "reserved": 3,
        "sold": 0,
        "restocked": 0,
        "received": 13,
    }
    assert client.get("/stock/LAMP-9").json() == counted.json()
    lowered = client.put("/stock/LAMP-9", json={"on_hand": 0})
    assert lowered.json()["received"] == 3
    assert conserved(admin_conn)


def test_put_rejects_bad_input_with_field_errors(client, admin_conn):
    response = client.put("/stock/NEW-1", json={"on_hand": 3})
    assert response.status_code == 422
    assert locs(response) == [["body", "name"], ["body", "price_cents"]]
    assert client.get("/stock/NEW-1").status_code == 404

    cases: list[tuple[Any, list[list[str | int]]]] = [
        ({"name": "X", "price_cents": 1, "on_hand": -1}, [["body", "on_hand"]]),
        ({"name": "X", "price_cents": 1, "on_hand": "3"}, [["body", "on_hand"]]),
        ({"name": "X", "price_cents": 1, "on_hand": True}, [["body", "on_hand"]]),
        ({"name": "X", "price_cents": 1, "on_hand": 10**12}, [["body", "on_hand"]]),
        ({"name": "X", "price_cents": -5, "on_hand": 1}, [["body", "price_cents"]]),
        ({"name": "  ", "price_cents": 1, "on_hand": 1}, [["body", "name"]]),
        ({"name": "a\x00b", "price_cents": 1, "on_hand": 1}, [["body", "name"]]),
        ({"name": "X", "price_cents": 1, "on_hand": 1, "colour": "red"}, [["body", "colour"]]),
        ({"name": "X", "price_cents": 1}, [["body", "on_hand"]]),
        ([1, 2], [["body"]]),
    ]
    for body, expected in cases:
        response = client.put("/stock/NEW-1", json=body)
        assert response.status_code == 422, body
        assert locs(response) == expected, body
    assert client.get("/stock").json() == {"products": []}
    assert conserved(admin_conn)


def test_unrepresentable_text_is_refused_not_a_crash(client):
    # json.dumps escapes a lone surrogate; it parses back into a str PostgreSQL cannot store.
    for body in ('{"name": "\\ud800", "price_cents": 1, "on_hand": 1}',
                 '{"\\ud800": 1, "on_hand": 1}',
                 '{"name": "X", "price_cents": NaN, "on_hand": 1}'):  # fmt: skip
        response = client.put(
            "/stock/NEW-1", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, body
    response = client.put("/stock/NEW-1", content=b"\xff\xfe{", headers={"content-type": "text"})
    assert response.status_code == 422


def test_counting_stock_in_needs_an_operators_token(anonymous, admin_conn):
    body = {"name": "Lamp", "price_cents": 990, "on_hand": 4}
    missing = anonymous.put("/stock/LAMP-9", json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="saga-outbox"'
    customer = anonymous.put("/stock/LAMP-9", json=body, headers=TOKENS.customer("c-42"))
    assert customer.status_code == 403
    assert 'scope="operator"' in customer.headers["www-authenticate"]
    other = AuthSettings(jwt_secret=SecretStr("another-deployments-secret-" + "y" * 8))
    forged = mint_token(other, subject="ops-1", scopes=["operator"])
    wrong = anonymous.put("/stock/LAMP-9", json=body, headers={"Authorization": f"Bearer {forged}"})
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "the token's signature does not verify"}
    odd = anonymous.put("/stock/LAMP-9", json=body, headers={"Authorization": "Bearer é€".encode()})
    assert odd.status_code == 401
    assert anonymous.get("/stock/LAMP-9").status_code == 404, "nothing was written"
    right = anonymous.put("/stock/LAMP-9", json=body, headers=OPERATOR)
    assert right.status_code == 201
    assert anonymous.get("/stock/LAMP-9").status_code == 200, "reads need no token"
    assert anonymous.get("/stock").status_code == 200


def test_reading_a_reservation_needs_an_operators_token(anonymous):
    assert anonymous.get("/reservations/o-1").status_code == 401
    assert anonymous.get("/reservations/o-1", headers=TOKENS.customer("c-42")).status_code == 403
    assert anonymous.get("/reservations/o-1", headers=OPERATOR).status_code == 404


def test_the_api_never_starts_open(runtime):
    with pytest.raises(ConfigurationError, match="AUTH_JWT_SECRET"):
        bootstrap.create_app(runtime, StockSettings(auth=AuthSettings(jwt_secret=None)))


def test_openapi_documents_the_routes(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"get", "put"} <= set(paths["/stock/{sku}"])
    assert "get" in paths["/stock"]


# --- fuzz: no input gives a server error -------------------------------------------------------

weird_text = st.text(
    st.one_of(st.characters(), st.sampled_from(["\ud800", "\x00", "/", "%", "\u202e"])),
    max_size=80,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | weird_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(weird_text, children, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "name": json_values,
            "price_cents": json_values,
            "on_hand": json_values,
            "extra": json_values,
        },
    ),
    json_values,
).map(lambda value: json.dumps(value).encode())
skus = st.one_of(st.sampled_from([c.sku for c in CATALOGUE] + ["NEW-1"]), weird_text)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sku=skus,
    body=st.one_of(bodies, st.binary(max_size=64)),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x+json", ""]),
    authorization=st.one_of(
        st.just(OPERATOR["Authorization"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=255)).map(lambda t: f"Bearer {t}"),
        st.text(st.characters(min_codepoint=32, max_codepoint=255)),
    ),
)
def test_no_input_gives_a_server_error(
    anonymous, admin_conn, sku, body, content_type, authorization
):
    seed(admin_conn)
    path = f"/stock/{quote(sku.encode('utf-8', 'surrogatepass'), safe='')}"
    headers = {"Authorization": authorization.encode("latin-1")}
    if content_type:
        headers["content-type"] = content_type.encode()
    for response in (
        anonymous.get(path),
        anonymous.put(path, content=body, headers=headers),
        anonymous.get("/stock"),
    ):
        assert response.status_code < 500, (response.request.method, path, body, response.text)
    assert conserved(admin_conn)


# --- bad input: a 422 naming the field, never a 5xx or a bare 400 -------------------------------


@pytest.mark.parametrize("value", ["a\x00b", "a\ud800b", "a\nb", "a\x85b"])
def test_unstorable_text_in_a_name_is_a_422_naming_it(client, value):
    body = json.dumps({"name": value, "price_cents": 1, "on_hand": 1})
    response = client.put(
        "/stock/NEW-1", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", "name"]]
    assert client.get("/stock/NEW-1").status_code == 404


@pytest.mark.parametrize(
    ("url", "loc"),
    [
        ("/stock/%00", ["path", "sku"]),
        ("/reservations/%00", ["path", "order_id"]),
        ("/reservations/a%C2%85b", ["path", "order_id"]),
    ],
)
def test_unstorable_text_in_a_path_is_a_422_naming_it(client, url, loc):
    response = client.get(url)
    assert response.status_code == 422, response.text
    assert locs(response) == [loc]


@pytest.mark.parametrize(
    "raw",
    [b'{"name": "\xff", "price_cents": 1, "on_hand": 1}', b'{"on_hand": ' + b"9" * 5000 + b"}"],
    ids=["invalid-utf8", "huge-integer"],
)
def test_a_json_body_that_cannot_be_parsed_is_a_422(client, raw):
    response = client.put("/stock/NEW-1", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert locs(response)[0][0] == "body"


def test_a_name_is_stored_as_sent_so_the_schema_is_what_is_accepted(client):
    response = client.put("/stock/NEW-1", json={"name": " Zoë Ω ", "price_cents": 1, "on_hand": 1})
    assert response.status_code == 201, response.text
    assert client.get("/stock/NEW-1").json()["name"] == " Zoë Ω "


def test_openapi_lists_every_status_each_operation_returns(client):
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        ("/stock", "get"): {"200", "503"},
        ("/stock/{sku}", "get"): {"200", "404", "422", "503"},
        ("/stock/{sku}", "put"): {"200", "201", "401", "403", "422", "503"},
        ("/reservations/{order_id}", "get"): {"200", "401", "403", "404", "422", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, (path, method)
        assert "Retry-After" in responses["503"]["headers"]
    name = client.get("/openapi.json").json()["components"]["schemas"]["ProductPut"]
    assert "pattern" in name["properties"]["name"]["anyOf"][0]
