"""The payment provider simulator over HTTP on the real database: idempotency, cards, refunds."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from payments.domain import Charge
from payments.provider import HttpPaymentProvider, ProviderUnavailable
from saga_runtime import ConfigurationError, DatabaseSettings
from simulators.payment_provider.api import create_app
from simulators.payment_provider.settings import ProviderSettings
from tests.integration.payment_provider_server import API_KEY, MERCHANT, running_provider
from tests.support import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def provider(database: DatabaseSettings) -> Iterator[httpx.Client]:
    with (
        running_provider(database.url, slow_seconds=0.5) as url,
        httpx.Client(base_url=url, headers=MERCHANT, timeout=30) as client,
    ):
        yield client


def charge_body(card_token: str = "tok_visa", **overrides: Any) -> dict[str, Any]:
    key = uuid.uuid4().hex
    return {
        "idempotency_key": f"key-{key}",
        "order_id": f"order-{key}",
        "amount_cents": 2599,
        "card_token": card_token,
    } | overrides


def ledger(client: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    response = client.get("/ledger")
    assert response.status_code == 200
    body: dict[str, list[dict[str, Any]]] = response.json()
    return body


def approved_charge(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post("/charges", json=charge_body(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_charge_is_approved_once_per_idempotency_key(provider: httpx.Client) -> None:
    body = charge_body()
    first = provider.post("/charges", json=body)
    assert first.status_code == 201
    charge = first.json()
    assert charge["status"] == "approved" and charge["charge_id"].startswith("ch_")
    assert (charge["order_id"], charge["amount_cents"]) == (body["order_id"], 2599)
    assert "Idempotent-Replayed" not in first.headers

    again = provider.post("/charges", json=body)
    assert again.status_code == 201
    assert again.json() == charge, "the original answer, not a second charge"
    assert again.headers["Idempotent-Replayed"] == "true"

    found = provider.get(f"/charges/{body['idempotency_key']}")
    assert found.status_code == 200 and found.json() == charge
    assert provider.get("/charges/never-used").status_code == 404
    assert [c["charge_id"] for c in ledger(provider)["charges"]] == [charge["charge_id"]]


def test_the_same_key_for_another_request_is_a_conflict(provider: httpx.Client) -> None:
    body = charge_body()
    assert provider.post("/charges", json=body).status_code == 201
    for change in ({"amount_cents": 1}, {"order_id": "other"}, {"card_token": "tok_other"}):
        response = provider.post("/charges", json=body | change)
        assert response.status_code == 409, change
    [charge] = ledger(provider)["charges"]
    assert charge["amount_cents"] == 2599


@pytest.mark.parametrize(
    ("card_token", "decline_code", "reason"),
    [
        ("tok_decline", "card_declined", "card declined"),
        ("tok_insufficient_funds", "insufficient_funds", "insufficient funds"),
    ],
)
def test_declining_cards_answer_402_every_time(
    provider: httpx.Client, card_token: str, decline_code: str, reason: str
) -> None:
    body = charge_body(card_token)
    first = provider.post("/charges", json=body)
    assert first.status_code == 402
    declined = first.json()
    assert declined["status"] == "declined"
    assert (declined["decline_code"], declined["reason"]) == (decline_code, reason)

    again = provider.post("/charges", json=body)
    assert again.status_code == 402 and again.json() == declined
    [charge] = ledger(provider)["charges"]
    assert charge["status"] == "declined", "the ledger says no money moved"


def test_tok_error_is_always_unavailable_and_charges_nothing(provider: httpx.Client) -> None:
    body = charge_body("tok_error")
    for _ in range(3):
        response = provider.post("/charges", json=body)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
    assert provider.get(f"/charges/{body['idempotency_key']}").status_code == 404
    assert ledger(provider)["charges"] == []


def test_tok_flaky_fails_the_first_attempt_of_each_key_then_approves(
    provider: httpx.Client,
) -> None:
    body = charge_body("tok_flaky")
    assert provider.post("/charges", json=body).status_code == 503
    second = provider.post("/charges", json=body)
    assert second.status_code == 201
    third = provider.post("/charges", json=body)
    assert third.status_code == 201 and third.json() == second.json()

    other = charge_body("tok_flaky")
    assert provider.post("/charges", json=other).status_code == 503
    assert provider.post("/charges", json=other).status_code == 201
    assert len(ledger(provider)["charges"]) == 2


def test_concurrent_requests_under_one_key_make_one_charge(provider: httpx.Client) -> None:
    # tok_slow keeps the first request in flight while the others arrive.
    body = charge_body("tok_slow")
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: provider.post("/charges", json=body), range(8)))
    assert [r.status_code for r in responses] == [201] * 8
    assert len({r.json()["charge_id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 7
    assert len(ledger(provider)["charges"]) == 1


def test_a_lookup_waits_for_a_charge_in_flight_under_its_key(
    database: DatabaseSettings, admin_conn: psycopg.Connection
) -> None:
    """After a charge timed out on the client, a lookup must not miss it (payments relies on it)."""
    body = charge_body("tok_slow")
    with (
        running_provider(database.url, slow_seconds=3.0) as url,
        httpx.Client(base_url=url, headers=MERCHANT, timeout=30) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        charging = pool.submit(client.post, "/charges", json=body)
        wait_until(lambda: _provider_holds_a_key_lock(admin_conn), what="the slow charge started")
        found = client.get(f"/charges/{body['idempotency_key']}")
        charged = charging.result()
    assert charged.status_code == 201
    assert found.status_code == 200, "the lookup waited for the charge in flight"
    assert found.json()["charge_id"] == charged.json()["charge_id"]


def test_a_void_fences_the_key_so_a_later_charge_under_it_is_refused(
    provider: httpx.Client,
) -> None:
    body = charge_body()
    key = body["idempotency_key"]
    voided = provider.post("/voids", json={"idempotency_key": key})
    assert voided.status_code == 201
    assert voided.json()["idempotency_key"] == key and voided.json()["status"] == "voided"
    again = provider.post("/voids", json={"idempotency_key": key})
    assert again.status_code == 201 and again.json() == voided.json()
    assert again.headers["Idempotent-Replayed"] == "true"

    late = provider.post("/charges", json=body)  # e.g. a request that was still in transit
    assert late.status_code == 409
    assert late.json()["code"] == "charge_voided"
    assert provider.get(f"/charges/{key}").status_code == 404
    book = ledger(provider)
    assert book["charges"] == []
    assert [v["idempotency_key"] for v in book["voids"]] == [key]
    # Other keys are not affected; a key with "/" in it is one key.
    assert provider.post("/charges", json=charge_body()).status_code == 201
    slashed = provider.post("/voids", json={"idempotency_key": "payments/o-1/charge"})
    assert slashed.status_code == 201
    assert slashed.json()["idempotency_key"] == "payments/o-1/charge"


def test_a_void_of_a_key_that_holds_a_charge_returns_it_and_voids_nothing(
    provider: httpx.Client,
) -> None:
    for card_token, status in (("tok_visa", 201), ("tok_decline", 402)):
        body = charge_body(card_token)
        charge = provider.post("/charges", json=body)
        assert charge.status_code == status
        found = provider.post("/voids", json={"idempotency_key": body["idempotency_key"]})
        assert found.status_code == 200 and found.json() == charge.json()
        assert provider.post("/charges", json=body).json() == charge.json(), "still replayed"
    assert ledger(provider)["voids"] == []


def test_a_void_waits_for_a_charge_in_flight_under_its_key_and_returns_it(
    database: DatabaseSettings, admin_conn: psycopg.Connection
) -> None:
    body = charge_body("tok_slow")
    with (
        running_provider(database.url, slow_seconds=3.0) as url,
        httpx.Client(base_url=url, headers=MERCHANT, timeout=30) as client,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        charging = pool.submit(client.post, "/charges", json=body)
        wait_until(lambda: _provider_holds_a_key_lock(admin_conn), what="the slow charge started")
        fenced = client.post("/voids", json={"idempotency_key": body["idempotency_key"]})
        charged = charging.result()
        book = ledger(client)
    assert charged.status_code == 201
    assert fenced.status_code == 200, "the void waited and found the charge"
    assert fenced.json()["charge_id"] == charged.json()["charge_id"]
    assert book["voids"] == []


def _provider_holds_a_key_lock(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
        " AND a.application_name = 'payment-provider'"
    ).fetchone()
    return row is not None and row[0] > 0


def test_a_charge_is_refunded_at_most_once(provider: httpx.Client) -> None:
    charge = approved_charge(provider)
    body = {"idempotency_key": "refund-1", "charge_id": charge["charge_id"], "amount_cents": 2599}
    first = provider.post("/refunds", json=body)
    assert first.status_code == 201
    refund = first.json()
    assert refund["refund_id"].startswith("re_") and refund["charge_id"] == charge["charge_id"]

    again = provider.post("/refunds", json=body)
    assert again.status_code == 201 and again.json() == refund
    assert again.headers["Idempotent-Replayed"] == "true"

    other_key = provider.post("/refunds", json=body | {"idempotency_key": "refund-2"})
    assert other_key.status_code == 409, "a second refund of the same charge"
    other_amount = provider.post("/refunds", json=body | {"amount_cents": 1})
    assert other_amount.status_code == 409, "the key was used for another refund"

    found = provider.get(f"/charges/{charge['idempotency_key']}").json()
    assert found["refund_id"] == refund["refund_id"]
    assert [r["refund_id"] for r in ledger(provider)["refunds"]] == [refund["refund_id"]]


def test_refunds_of_unknown_declined_or_smaller_charges_are_refused(
    provider: httpx.Client,
) -> None:
    unknown = provider.post(
        "/refunds", json={"idempotency_key": "r-1", "charge_id": "ch_nope", "amount_cents": 1}
    )
    assert unknown.status_code == 404

    declined = provider.post("/charges", json=charge_body("tok_decline")).json()
    refused = provider.post(
        "/refunds",
        json={"idempotency_key": "r-2", "charge_id": declined["charge_id"], "amount_cents": 1},
    )
    assert refused.status_code == 409

    charge = approved_charge(provider)
    too_much = provider.post(
        "/refunds",
        json={"idempotency_key": "r-3", "charge_id": charge["charge_id"], "amount_cents": 2600},
    )
    assert too_much.status_code == 422
    assert ledger(provider)["refunds"] == []


def test_concurrent_refunds_of_one_charge_with_different_keys_refund_it_once(
    provider: httpx.Client,
) -> None:
    charge = approved_charge(provider)

    def refund(n: int) -> httpx.Response:
        return provider.post(
            "/refunds",
            json={"idempotency_key": f"r-{n}", "charge_id": charge["charge_id"], "amount_cents": 5},
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = Counter(r.status_code for r in pool.map(refund, range(10)))
    assert statuses == {201: 1, 409: 9}
    assert len(ledger(provider)["refunds"]) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/charges", {}),
        ("/charges", charge_body(amount_cents=-1)),
        ("/charges", charge_body(amount_cents="12")),
        ("/charges", charge_body(amount_cents=12.5)),
        ("/charges", charge_body(amount_cents=True)),
        ("/charges", charge_body(amount_cents=2**63)),
        ("/charges", charge_body(idempotency_key="")),
        ("/charges", charge_body() | {"card_token": None}),
        ("/charges", charge_body(surprise="field")),
        ("/refunds", {"idempotency_key": "r", "amount_cents": 1}),
        ("/refunds", {"idempotency_key": "r", "charge_id": "ch_1", "amount_cents": -5}),
    ],
)
def test_bad_input_is_422_and_changes_nothing(
    provider: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    assert provider.post(path, json=body).status_code == 422
    assert ledger(provider) == {"charges": [], "refunds": [], "voids": []}


def test_the_ledger_lists_every_charge_and_refund(provider: httpx.Client) -> None:
    approved = approved_charge(provider)
    declined = provider.post("/charges", json=charge_body("tok_insufficient_funds")).json()
    refund = provider.post(
        "/refunds",
        json={"idempotency_key": "r-1", "charge_id": approved["charge_id"], "amount_cents": 2599},
    ).json()
    book = ledger(provider)
    assert {(c["charge_id"], c["status"], c["refund_id"]) for c in book["charges"]} == {
        (approved["charge_id"], "approved", refund["refund_id"]),
        (declined["charge_id"], "declined", None),
    }
    assert [(r["refund_id"], r["charge_id"], r["amount_cents"]) for r in book["refunds"]] == [
        (refund["refund_id"], approved["charge_id"], 2599)
    ]


def test_a_second_provider_on_the_same_database_starts_and_shares_the_ledger(
    provider: httpx.Client, database: DatabaseSettings
) -> None:
    body = charge_body()
    charge = provider.post("/charges", json=body).json()
    # Its startup creates the schema "if not exists" while the first one is using it.
    with (
        running_provider(database.url, clean=False) as url,
        httpx.Client(base_url=url, headers=MERCHANT) as other,
    ):
        assert other.get("/health").json() == {"status": "ok"}
        replayed = other.post("/charges", json=body)
    assert replayed.status_code == 201
    assert replayed.json()["charge_id"] == charge["charge_id"]
    assert len(ledger(provider)["charges"]) == 1


# --- text that PostgreSQL or JSON cannot hold is a 422 naming the field -------------------------

UNSTORABLE = {"nul": "a\x00b", "surrogate": "a\ud800b", "newline": "a\nb"}
CHARGE_TEXT = ["idempotency_key", "order_id", "card_token"]
REFUND_TEXT = ["idempotency_key", "charge_id"]


def post_raw(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    # json.dumps escapes a lone surrogate as "\ud800", as a hostile client would send it.
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def locs(response: httpx.Response) -> list[list[str | int]]:
    return [error["loc"] for error in response.json()["detail"]]


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
@pytest.mark.parametrize(
    ("path", "field"),
    [("/charges", f) for f in CHARGE_TEXT] + [("/refunds", f) for f in REFUND_TEXT],
)
def test_unstorable_text_in_any_field_is_a_422_naming_it(
    provider: httpx.Client, path: str, field: str, value: str
) -> None:
    body = charge_body() if path == "/charges" else {"idempotency_key": "r-1", "charge_id": "c"}
    body |= {"amount_cents": 1, field: value}
    response = post_raw(provider, path, body)
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", field]]
    assert ledger(provider) == {"charges": [], "refunds": [], "voids": []}


@pytest.mark.parametrize("key", ["%00", "a%00b", "%7F"])
def test_unstorable_text_in_a_lookup_path_is_a_422(provider: httpx.Client, key: str) -> None:
    response = provider.get(f"/charges/{key}")
    assert response.status_code == 422, response.text
    assert locs(response) == [["path", "idempotency_key"]]


@pytest.mark.parametrize(
    "raw",
    [b'{"order_id": "\xff"}', b'{"amount_cents": ' + b"9" * 5000 + b"}", b"[" * 100_000],
    ids=["invalid-utf8", "huge-integer", "deep"],
)
def test_a_body_that_cannot_be_parsed_is_a_422(provider: httpx.Client, raw: bytes) -> None:
    response = provider.post("/charges", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


def test_openapi_lists_every_status_each_operation_returns(provider: httpx.Client) -> None:
    paths = provider.get("/openapi.json").json()["paths"]
    expected = {
        ("/charges", "post"): {"201", "401", "402", "409", "422", "503"},
        ("/charges/{idempotency_key}", "get"): {"200", "401", "404", "422", "503"},
        ("/refunds", "post"): {"201", "401", "404", "409", "422", "503"},
        ("/ledger", "get"): {"200", "401", "503"},
        ("/health", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, (path, method)
        assert "Retry-After" in responses["503"]["headers"]


# --- the merchant's key ------------------------------------------------------------------------

OPERATIONS = [
    ("POST", "/charges", charge_body()),
    ("POST", "/voids", {"idempotency_key": "k-1"}),
    ("POST", "/refunds", {"idempotency_key": "r-1", "charge_id": "c-1", "amount_cents": 1}),
    ("GET", "/charges/k-1", None),
    ("GET", "/ledger", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS, ids=[o[1] for o in OPERATIONS])
def test_every_operation_needs_the_merchants_key(
    provider: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer guess"}):
        response = provider.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert API_KEY not in response.text
    assert ledger(provider) == {"charges": [], "refunds": [], "voids": []}, "nothing done"
    assert provider.get("/health", headers={"Authorization": ""}).status_code == 200


def test_payments_client_sends_the_key_and_never_shows_it(provider: httpx.Client) -> None:
    url = str(provider.base_url)
    right = HttpPaymentProvider(url, timeout=10, connect_timeout=2, api_key=API_KEY)
    charge = right.charge(Charge("k-pay", "o-pay", 100, "tok_visa"))
    assert charge.approved
    # A refused key is retried like an outage (a rotation half done), and never shown.
    wrong = HttpPaymentProvider(url, timeout=10, connect_timeout=2, api_key="a-leaked-guess")
    with pytest.raises(ProviderUnavailable) as refused:
        wrong.charge(Charge("k-pay-2", "o-pay-2", 100, "tok_visa"))
    assert "401" in str(refused.value) and "PAYMENTS_PROVIDER_API_KEY" in str(refused.value)
    assert "a-leaked-guess" not in str(refused.value)
    assert ledger(provider)["charges"] == [provider.get("/charges/k-pay").json()]


def test_the_simulator_never_runs_open(database: DatabaseSettings) -> None:
    with pytest.raises(ConfigurationError, match="PROVIDER_API_KEY"):
        create_app(ProviderSettings(database_url=database.url, api_key=None))
