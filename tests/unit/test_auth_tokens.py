"""Token verification: every way a token can fail is refused, with a reason safe to show."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode
from pydantic import SecretStr

from saga_runtime import (
    AuthSettings,
    ConfigurationError,
    InvalidToken,
    Principal,
    TokenVerifier,
    mint_token,
)

SECRET = "s" * 40
OTHER_SECRET = "o" * 40


def settings(**overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {"jwt_secret": SecretStr(SECRET), "leeway_seconds": 30.0}
    values.update(overrides)
    return AuthSettings(**values)


def verifier(**overrides: Any) -> TokenVerifier:
    return TokenVerifier.from_settings(settings(**overrides))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": "saga-outbox",
        "aud": "saga-outbox",
        "sub": "c-42",
        "scope": "customer",
        "iat": now,
        "exp": now + 600,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def hs256(key: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm="HS256")


def refused(token: str, verify: TokenVerifier | None = None) -> str:
    with pytest.raises(InvalidToken) as caught:
        (verify or verifier()).verify(token)
    assert not token or token not in caught.value.reason
    return caught.value.reason


def test_a_minted_token_proves_its_subject_and_scopes() -> None:
    token = mint_token(settings(), subject="c-42", scopes=["customer"])
    assert verifier().verify(token) == Principal("c-42", frozenset({"customer"}))


def test_scopes_are_a_space_separated_string_or_a_list() -> None:
    assert verifier().verify(hs256(scope="operator customer")).scopes == {"operator", "customer"}
    assert verifier().verify(hs256(scope=["operator"])).scopes == {"operator"}
    assert verifier().verify(hs256(scope=None)).scopes == frozenset()
    assert "scope" in refused(hs256(scope=7))


def test_an_expired_token_is_refused_past_the_leeway_only() -> None:
    now = int(time.time())
    assert refused(hs256(iat=now - 700, exp=now - 60)) == "the token has expired"
    assert verifier().verify(hs256(iat=now - 700, exp=now - 10)).subject == "c-42"


def test_a_token_from_the_future_is_refused() -> None:
    now = int(time.time())
    assert refused(hs256(iat=now + 120)) == "the token is not valid yet"
    assert refused(hs256(nbf=now + 120)) == "the token is not valid yet"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "someone-else"}, "the token is from another issuer"),
        ({"aud": "another-api"}, "the token is for another audience"),
        ({"exp": None}, "the token has no exp claim"),
        ({"sub": None}, "the token has no sub claim"),
        ({"iat": None}, "the token has no iat claim"),
        ({"iss": None}, "the token has no iss claim"),
        ({"aud": None}, "the token has no aud claim"),
        ({"sub": 42}, "the token's sub claim must be a string"),
        ({"sub": ""}, "the token's sub claim must be 1-200 characters"),
        ({"sub": "   "}, "the token's sub claim must be printable, not blank"),
        ({"sub": "a\x00b"}, "the token's sub claim must be printable, not blank"),
        ({"sub": "x" * 201}, "the token's sub claim must be 1-200 characters"),
        ({"iat": "yesterday"}, "the token's iat claim is not a number"),
    ],
)
def test_claims_that_do_not_hold_are_refused(overrides: dict[str, Any], reason: str) -> None:
    assert refused(hs256(**overrides)) == reason


def test_configured_issuer_and_audience_are_the_ones_checked() -> None:
    custom = verifier(issuer="https://id.example", audience="shop")
    assert custom.verify(hs256(iss="https://id.example", aud="shop")).subject == "c-42"
    assert refused(hs256(), custom) == "the token is from another issuer"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    assert refused(hs256(OTHER_SECRET)) == "the token's signature does not verify"


def test_the_previous_secret_verifies_during_a_rotation() -> None:
    rotating = verifier(jwt_secret=SecretStr(OTHER_SECRET), jwt_previous_secret=SecretStr(SECRET))
    assert rotating.verify(hs256(SECRET)).subject == "c-42"
    assert rotating.verify(hs256(OTHER_SECRET)).subject == "c-42"
    assert refused(hs256("t" * 40), rotating) == "the token's signature does not verify"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "not a token at all", "eyJhbGciOiJIUzI1NiJ9.e30", "é.é.é", "\x00"],
)
def test_a_malformed_token_is_refused(token: str) -> None:
    assert refused(token) == "the token is malformed"


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none")
    assert refused(unsigned) == "the token's algorithm is not accepted"


def test_an_oversized_token_is_refused_before_parsing() -> None:
    assert refused("a" * 10_000) == "the token is too long"


# --- public keys from a JWKS file --------------------------------------------------------------


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_file(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(entries)}))
    return path


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**entry, "kid": kid, "use": "sig"}


def test_rs256_and_es256_tokens_verify_against_a_jwks(tmp_path: Path) -> None:
    rsa_private, ec_private = rsa_key(), ec.generate_private_key(ec.SECP256R1())
    path = jwks_file(tmp_path, public_jwk(rsa_private, "r1"), public_jwk(ec_private, "e1"))
    keyed = TokenVerifier.from_settings(AuthSettings(jwks_file=path))
    rs = jwt.encode(claims(), rsa_private, algorithm="RS256", headers={"kid": "r1"})
    es = jwt.encode(claims(scope="operator"), ec_private, algorithm="ES256", headers={"kid": "e1"})
    assert keyed.verify(rs) == Principal("c-42", frozenset({"customer"}))
    assert keyed.verify(es) == Principal("c-42", frozenset({"operator"}))
    unknown = jwt.encode(claims(), rsa_private, algorithm="RS256", headers={"kid": "r2"})
    assert refused(unknown, keyed) == "the token's key id is unknown"
    mismatched = jwt.encode(claims(), ec_private, algorithm="ES256", headers={"kid": "r1"})
    assert refused(mismatched, keyed) == "the token's algorithm does not match its key"
    forged = jwt.encode(claims(), rsa_key(), algorithm="RS256", headers={"kid": "r1"})
    assert refused(forged, keyed) == "the token's signature does not verify"


def test_a_public_key_is_never_taken_for_an_hmac_secret(tmp_path: Path) -> None:
    """Algorithm confusion: an HS256 token "signed" with the public key is refused."""
    private = rsa_key()
    keyed = TokenVerifier.from_settings(
        AuthSettings(jwks_file=jwks_file(tmp_path, public_jwk(private, "r1")))
    )
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # By hand: PyJWT itself refuses to sign HS256 with a PEM key.
    signing_input = b".".join(
        base64url_encode(json.dumps(part).encode())
        for part in ({"alg": "HS256", "typ": "JWT", "kid": "r1"}, claims())
    )
    signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
    confused = (signing_input + b"." + base64url_encode(signature)).decode()
    assert refused(confused, keyed) == "the token's algorithm is not accepted"


def test_a_single_key_without_kid_verifies_tokens_without_kid(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    entry = public_jwk(private, "x")
    del entry["kid"]
    keyed = TokenVerifier.from_settings(AuthSettings(jwks_file=jwks_file(tmp_path, entry)))
    assert keyed.verify(jwt.encode(claims(), private, algorithm="ES256")).subject == "c-42"


# --- configuration -----------------------------------------------------------------------------


def test_no_keys_at_all_refuses_to_start() -> None:
    with pytest.raises(ConfigurationError, match="AUTH_JWT_SECRET"):
        TokenVerifier.from_settings(AuthSettings(jwt_secret=None, jwks_file=None))


def test_a_short_secret_refuses_to_start_without_showing_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        TokenVerifier.from_settings(settings(jwt_secret=SecretStr("too-short-secret")))
    assert "at least 32" in str(caught.value)
    assert "too-short-secret" not in str(caught.value)


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        json.dumps({"keys": []}),
        json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}),
        json.dumps({"keys": [{"kty": "RSA", "kid": "broken"}]}),
    ],
    ids=["not-json", "no-keys", "symmetric-key", "broken-key"],
)
def test_a_bad_jwks_file_refuses_to_start(tmp_path: Path, document: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(document)
    with pytest.raises(ConfigurationError, match="AUTH_JWKS_FILE"):
        TokenVerifier.from_settings(AuthSettings(jwks_file=path))


def test_minting_needs_the_secret() -> None:
    with pytest.raises(ConfigurationError, match="AUTH_JWT_SECRET"):
        mint_token(AuthSettings(jwt_secret=None), subject="c-42", scopes=["customer"])


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_JWT_SECRET", SECRET)
    monkeypatch.setenv("AUTH_LEEWAY", "5")
    monkeypatch.setenv("AUTH_TOKEN_TTL", "60")
    monkeypatch.setenv("AUTH_ISSUER", "https://id.example")
    read = AuthSettings()
    assert read.leeway_seconds == 5 and read.token_ttl_seconds == 60
    assert read.issuer == "https://id.example"
    assert "s" * 40 not in repr(read)
