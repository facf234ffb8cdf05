"""Bearer tokens for the harness's clients (tests, bench, chaos), minted with a system's
``AUTH_JWT_SECRET``: one per customer, kept until half its lifetime has passed, so a
load generator signs once per customer rather than once per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from pydantic import SecretStr

from saga_runtime import AuthSettings, mint_token

__all__ = ["Tokens"]


class Tokens:
    """Authorization headers for customers and an operator of one system."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._minted: dict[tuple[str, str], tuple[str, float]] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tokens:
        """The tokens a system with environment ``env`` accepts."""
        return cls(
            AuthSettings(
                jwt_secret=SecretStr(env["AUTH_JWT_SECRET"]),
                issuer=env.get("AUTH_ISSUER", "saga-outbox"),
                audience=env.get("AUTH_AUDIENCE", "saga-outbox"),
            )
        )

    def customer(self, customer_id: str) -> dict[str, str]:
        """Headers that make a request the customer's."""
        return self._headers(customer_id, "customer")

    def operator(self, name: str = "harness") -> dict[str, str]:
        """Headers that make a request an operator's."""
        return self._headers(name, "operator")

    def _headers(self, subject: str, scope: str) -> dict[str, str]:
        now = time.time()
        with self._lock:
            token, minted = self._minted.get((subject, scope), ("", 0.0))
            if now - minted > self._settings.token_ttl_seconds / 2:
                token = mint_token(self._settings, subject=subject, scopes=[scope], now=now)
                self._minted[(subject, scope)] = (token, now)
        return {"Authorization": f"Bearer {token}"}
