"""The HTTP edge of authentication: 401 with a challenge, 403 for a missing scope, and nothing
else of the operation run for a caller who proves nothing."""

from __future__ import annotations

import time
from typing import Annotated

import jwt
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import SecretStr

from saga_runtime import (
    AuthSettings,
    Principal,
    TokenVerifier,
    api_key_guard,
    auth_responses,
    install_authentication,
    install_error_handlers,
    mint_token,
    require_scope,
)

SETTINGS = AuthSettings(jwt_secret=SecretStr("k" * 40))
API_KEY = "merchant-key-123"
Operator = Annotated[Principal, Depends(require_scope("operator"))]


def database(request: Request) -> str:
    request.app.state.calls.append("database")  # stands for a connection from the pool
    return "conn"


Conn = Annotated[str, Depends(database)]


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def client(calls: list[str]) -> TestClient:
    app = FastAPI(responses=auth_responses())
    install_error_handlers(app, unavailable="the database")
    install_authentication(app, TokenVerifier.from_settings(SETTINGS))

    app.state.calls = calls

    @app.get("/admin")
    def admin(operator: Operator, conn: Conn) -> dict[str, str]:
        return {"who": operator.subject}

    key = [Depends(api_key_guard(API_KEY, description="the merchant's key"))]

    @app.get("/ledger", dependencies=key)
    def ledger(conn: Conn) -> dict[str, str]:
        return {"ledger": "ok"}

    @app.get("/whoami")
    async def whoami(operator: Operator) -> dict[str, str]:
        return {"who": operator.subject}

    @app.get("/ledger-head", dependencies=key)
    async def ledger_head() -> dict[str, str]:
        return {"ledger": "ok"}

    return TestClient(app)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token(*scopes: str, **overrides: float) -> str:
    return mint_token(SETTINGS, subject="ops-1", scopes=scopes, **overrides)


def test_the_right_scope_gets_in(client: TestClient, calls: list[str]) -> None:
    response = client.get("/admin", headers=bearer(token("operator")))
    assert response.status_code == 200
    assert response.json() == {"who": "ops-1"}
    assert calls == ["database"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}],
    ids=["none", "basic", "empty-bearer"],
)
def test_no_bearer_token_is_a_401_with_a_challenge(
    client: TestClient, calls: list[str], headers: dict[str, str]
) -> None:
    response = client.get("/admin", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="saga-outbox"'
    assert "bearer token is required" in response.json()["detail"]
    assert calls == []


@pytest.mark.parametrize(
    ("credential", "reason"),
    [
        ("garbage", "the token is malformed"),
        (token("operator", now=time.time() - 7200), "the token has expired"),
        (
            jwt.encode({"sub": "ops-1", "scope": "operator"}, "x" * 40, algorithm="HS256"),
            "the token's signature does not verify",
        ),
        ("é€".encode().decode("latin-1"), "the token is malformed"),
    ],
    ids=["malformed", "expired", "foreign", "non-ascii"],
)
def test_a_token_that_proves_nothing_is_a_401_saying_why(
    client: TestClient, calls: list[str], credential: str, reason: str
) -> None:
    response = client.get(
        "/admin", headers={"Authorization": f"Bearer {credential}".encode("latin-1")}
    )  # type: ignore[dict-item]
    assert response.status_code == 401
    assert response.json() == {"detail": reason}
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="saga-outbox", error="invalid_token", error_description="{reason}"'
    )
    assert calls == [], "a bad token costs no database work"


def test_a_valid_token_without_the_scope_is_a_403(client: TestClient, calls: list[str]) -> None:
    response = client.get("/admin", headers=bearer(token("customer")))
    assert response.status_code == 403
    assert response.json() == {"detail": "this needs a token with the scope operator"}
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert calls == []


def test_the_api_key_guard(client: TestClient, calls: list[str]) -> None:
    missing = client.get("/ledger")
    assert missing.status_code == 401
    assert "API key is required" in missing.json()["detail"]
    wrong = client.get("/ledger", headers=bearer("guess"))
    assert wrong.status_code == 401
    assert API_KEY not in wrong.text
    odd = client.get("/ledger", headers={"Authorization": "Bearer é€".encode()})  # type: ignore[dict-item]
    assert odd.status_code == 401
    assert calls == []
    assert client.get("/ledger", headers=bearer(API_KEY)).status_code == 200


def test_an_empty_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="anyone"):
        api_key_guard("", description="nothing")


def test_openapi_shows_the_schemes_so_docs_can_authorize(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerJWT"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["bearerJWT"]["description"],
    }
    assert schemes["apiKey"]["scheme"] == "bearer"
    assert document["paths"]["/admin"]["get"]["security"] == [{"bearerJWT": []}]
    assert document["paths"]["/ledger"]["get"]["security"] == [{"apiKey": []}]
    assert "WWW-Authenticate" in document["paths"]["/admin"]["get"]["responses"]["401"]["headers"]


def test_a_caller_is_checked_without_waiting_for_a_worker_thread(
    client: TestClient, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker threads are what a busy service runs out of (each holds a database call):
    the token and API-key checks must not need one, so a refused caller is answered at once
    however busy they are, and an accepted one costs no thread for being checked."""

    async def no_threads_left(*args: object, **kwargs: object) -> object:
        raise AssertionError("a dependency asked for a worker thread")

    monkeypatch.setattr("fastapi.dependencies.utils.run_in_threadpool", no_threads_left)
    assert client.get("/whoami", headers=bearer(token("operator"))).json() == {"who": "ops-1"}
    assert client.get("/whoami", headers=bearer("garbage")).status_code == 401
    assert client.get("/whoami", headers=bearer(token("customer"))).status_code == 403
    assert client.get("/ledger-head", headers=bearer(API_KEY)).status_code == 200
    assert client.get("/ledger-head", headers=bearer("guess")).status_code == 401
