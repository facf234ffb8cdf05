"""``sagactl token``: local tokens the APIs accept, and a clear refusal without the secret."""

from __future__ import annotations

import jwt
import pytest
from pydantic import SecretStr

from saga_runtime import AuthSettings, Principal, TokenVerifier
from sagactl.cli import main

SECRET = "a-local-secret-of-at-least-32-bytes!"


@pytest.fixture
def verifier(monkeypatch: pytest.MonkeyPatch) -> TokenVerifier:
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    return TokenVerifier.from_settings(AuthSettings(jwt_secret=SecretStr(SECRET)))


def minted(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["token", *argv]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "only the token, so that $(sagactl token ...) works"
    return out.strip()


def test_a_customer_token(verifier: TokenVerifier, capsys: pytest.CaptureFixture[str]) -> None:
    token = minted(capsys, "--customer", "c-42")
    assert verifier.verify(token) == Principal("c-42", frozenset({"customer"}))


def test_an_operator_token_names_the_operator(
    verifier: TokenVerifier, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGACTL_ACTOR", "ada")
    assert verifier.verify(minted(capsys, "--operator")) == Principal(
        "ada", frozenset({"operator"})
    )
    named = verifier.verify(minted(capsys, "--operator", "--name", "grace"))
    assert named.subject == "grace"


def test_the_lifetime_is_chosen_with_ttl(
    verifier: TokenVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = jwt.decode(minted(capsys, "--customer", "c-1", "--ttl", "60"), SECRET,
                        algorithms=["HS256"], audience="saga-outbox")  # fmt: skip
    assert claims["exp"] - claims["iat"] == 60


def test_without_the_secret_it_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUTH_JWT_SECRET", raising=False)
    assert main(["token", "--customer", "c-42"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "AUTH_JWT_SECRET" in captured.err and "fix:" in captured.err


def test_a_customer_id_no_api_accepts_is_refused(
    verifier: TokenVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--customer", "   "]) == 2
    assert "sub claim" in capsys.readouterr().err


def test_customer_or_operator_is_required(verifier: TokenVerifier) -> None:
    with pytest.raises(SystemExit):
        main(["token"])
