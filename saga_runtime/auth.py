"""Bearer tokens: who a caller is (the JWT's subject) and what it may do (its scopes).

Keys come from configuration (``AuthSettings``): an HS256 secret for local use, RS256 or
ES256 public keys from a JWKS file for real deployments, or both. Every token must name our
issuer and audience, carry ``sub``, ``iat`` and ``exp``, and be inside its validity window
give or take ``AUTH_LEEWAY`` seconds of clock skew. Nothing here touches a database, so a bad
token costs a signature check at most.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.exceptions import InvalidSubjectError
from pydantic import AliasChoices, Field, NonNegativeFloat, PositiveFloat, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from saga_runtime.errors import ConfigurationError, SagaRuntimeError
from saga_runtime.text import check_non_blank

__all__ = [
    "HS256_MIN_SECRET_BYTES",
    "AuthSettings",
    "InvalidToken",
    "Principal",
    "TokenVerifier",
    "mint_token",
]

# RFC 7518 3.2: an HS256 key at least as long as the hash. Shorter is refused at start.
HS256_MIN_SECRET_BYTES = 32
# Public-key algorithms a JWKS key may verify; HS256 only ever with the configured secret
# (never a JWKS "oct" key, and never a public key used as an HMAC secret).
ASYMMETRIC = frozenset({"RS256", "ES256"})
# A real token is a few hundred bytes; anything this long is refused before any parsing.
MAX_TOKEN_CHARS = 8192
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
_SUBJECT_MAX_CHARS = 200  # what every API accepts as an id (saga_runtime.text.Text)


class AuthSettings(BaseSettings):
    """``AUTH_JWT_SECRET`` and/or ``AUTH_JWKS_FILE``; ``AUTH_ISSUER``, ``AUTH_AUDIENCE``,
    ``AUTH_LEEWAY`` (seconds of clock skew), ``AUTH_TOKEN_TTL`` (seconds, minted tokens)."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    jwt_secret: SecretStr | None = None
    # While rotating the secret: tokens signed with the previous one still verify.
    jwt_previous_secret: SecretStr | None = None
    jwks_file: Path | None = None
    issuer: str = "saga-outbox"
    audience: str = "saga-outbox"
    leeway_seconds: NonNegativeFloat = Field(
        default=30.0, le=300, validation_alias=AliasChoices("AUTH_LEEWAY", "leeway_seconds")
    )
    token_ttl_seconds: PositiveFloat = Field(
        default=3600.0, validation_alias=AliasChoices("AUTH_TOKEN_TTL", "token_ttl_seconds")
    )


class InvalidToken(SagaRuntimeError):
    """The token proves nothing; ``reason`` is safe to show the caller (never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """A verified caller: ``subject`` is who (a customer id, an operator's name)."""

    subject: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def _secret_bytes(secret: SecretStr | None, name: str) -> bytes | None:
    if secret is None or not secret.get_secret_value():
        return None
    value = secret.get_secret_value().encode()
    if len(value) < HS256_MIN_SECRET_BYTES:
        raise ConfigurationError(
            f"{name} is {len(value)} bytes; HS256 needs at least {HS256_MIN_SECRET_BYTES}"
            " (generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return value


def _load_jwks(path: Path) -> dict[str | None, jwt.PyJWK]:
    """The file's public keys by ``kid``; keys of other algorithms are refused, not skipped,
    so that a misconfigured key set fails at start rather than at the first token."""
    try:
        document = json.loads(path.read_text())
        keys = document["keys"]
        if not isinstance(keys, list) or not keys:
            raise ValueError("'keys' must be a non-empty list")
        found: dict[str | None, jwt.PyJWK] = {}
        for entry in keys:
            key = jwt.PyJWK.from_dict(entry)
            if key.algorithm_name not in ASYMMETRIC:
                raise ValueError(f"key {entry.get('kid')!r} is {key.algorithm_name}")
            kid = entry.get("kid")
            if kid in found:
                raise ValueError(f"two keys with kid {kid!r}")
            found[kid] = key
        return found
    except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigurationError(
            f"AUTH_JWKS_FILE {path}: {exc} (a JWKS of RS256/ES256 public keys is expected)"
        ) from exc


def _scopes(claim: Any) -> frozenset[str]:
    # RFC 8693 4.2: a space-separated string. A list (some issuers' "scp") is taken too.
    if claim is None:
        return frozenset()
    if isinstance(claim, str):
        return frozenset(claim.split())
    if isinstance(claim, list) and all(isinstance(s, str) for s in claim):
        return frozenset(claim)
    raise InvalidToken("the scope claim must be a space-separated string")


def _why(exc: jwt.InvalidTokenError) -> str:
    """A fixed, caller-safe reason for each way a token fails (no token text, no key)."""
    reasons: list[tuple[type[Exception], str]] = [
        (jwt.ExpiredSignatureError, "the token has expired"),
        (jwt.ImmatureSignatureError, "the token is not valid yet"),
        (jwt.InvalidAudienceError, "the token is for another audience"),
        (jwt.InvalidIssuerError, "the token is from another issuer"),
        (jwt.InvalidSignatureError, "the token's signature does not verify"),
        (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted"),
        (jwt.InvalidIssuedAtError, "the token's iat claim is not a number"),
        (InvalidSubjectError, "the token's sub claim must be a string"),
        (jwt.DecodeError, "the token is malformed"),
    ]
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim} claim"
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "the token is invalid"


class TokenVerifier:
    """Verifies bearer tokens against the configured keys, issuer and audience."""

    def __init__(
        self,
        *,
        secrets: Sequence[bytes] = (),
        public_keys: dict[str | None, jwt.PyJWK] | None = None,
        issuer: str,
        audience: str,
        leeway: float,
    ) -> None:
        if not secrets and not public_keys:
            raise ConfigurationError(
                "no keys to verify tokens with: set AUTH_JWT_SECRET (HS256, local use) or"
                " AUTH_JWKS_FILE (RS256/ES256 public keys)"
            )
        self._secrets = tuple(secrets)
        self._public_keys = dict(public_keys or {})
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenVerifier:
        """The verifier ``settings`` describe; ``ConfigurationError`` if they give no key."""
        secrets = [
            s
            for s in (
                _secret_bytes(settings.jwt_secret, "AUTH_JWT_SECRET"),
                _secret_bytes(settings.jwt_previous_secret, "AUTH_JWT_PREVIOUS_SECRET"),
            )
            if s is not None
        ]
        keys = _load_jwks(settings.jwks_file) if settings.jwks_file else None
        return cls(
            secrets=secrets,
            public_keys=keys,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway_seconds,
        )

    def verify(self, token: str) -> Principal:
        """The caller the token proves; ``InvalidToken`` saying why not."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("the token is too long")
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm == "HS256" and self._secrets:
                claims = self._decode_hs256(token)
            elif algorithm in ASYMMETRIC and self._public_keys:
                claims = self._decode(token, self._public_key(header), algorithm)
            else:
                raise InvalidToken("the token's algorithm is not accepted")
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(_why(exc)) from None
        return Principal(subject=_subject(claims["sub"]), scopes=_scopes(claims.get("scope")))

    def _decode_hs256(self, token: str) -> dict[str, Any]:
        # The current secret first; the previous one only while a rotation is under way.
        for n, secret in enumerate(self._secrets):
            try:
                return self._decode(token, secret, "HS256")
            except jwt.InvalidSignatureError:
                if n == len(self._secrets) - 1:
                    raise
        raise AssertionError("unreachable: at least one secret")

    def _public_key(self, header: dict[str, Any]) -> jwt.PyJWK:
        kid = header.get("kid")
        if kid is None and len(self._public_keys) == 1:
            return next(iter(self._public_keys.values()))
        if not isinstance(kid, str) or kid not in self._public_keys:
            raise InvalidToken("the token's key id is unknown")
        key = self._public_keys[kid]
        if key.algorithm_name != header.get("alg"):
            raise InvalidToken("the token's algorithm does not match its key")
        return key

    def _decode(self, token: str, key: bytes | jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self._audience,
            issuer=self._issuer,
            leeway=self._leeway,
            options={"require": _REQUIRED_CLAIMS},
        )
        return claims


def _subject(value: Any) -> str:
    # Subjects become ids the APIs store and compare: the same text rules as any id.
    if not isinstance(value, str) or not 1 <= len(value) <= _SUBJECT_MAX_CHARS:
        raise InvalidToken("the token's sub claim must be 1-200 characters")
    try:
        check_non_blank(value)
    except ValueError:
        raise InvalidToken("the token's sub claim must be printable, not blank") from None
    return value


def mint_token(
    settings: AuthSettings,
    *,
    subject: str,
    scopes: Iterable[str],
    ttl_seconds: float | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token signed with ``AUTH_JWT_SECRET`` (local use: ``sagactl token``).

    Deployments that verify with a JWKS get their tokens from their identity provider.
    """
    secret = _secret_bytes(settings.jwt_secret, "AUTH_JWT_SECRET")
    if secret is None:
        raise ConfigurationError(
            "AUTH_JWT_SECRET is not set: only tokens signed with it can be minted here"
            " (./dev writes one to .env)"
        )
    issued = int(time.time() if now is None else now)
    ttl = settings.token_ttl_seconds if ttl_seconds is None else ttl_seconds
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": _subject(subject),
        "scope": " ".join(sorted(set(scopes))),
        "iat": issued,
        "exp": issued + int(ttl),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")
