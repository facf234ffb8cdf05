"""The payment provider's ledger, as the invariant checker needs it (one place for
``sagactl audit`` and the test harness)."""

from __future__ import annotations

import os
from typing import Any

import httpx

from sagactl.invariants import Charge, Refund

__all__ = [
    "DEFAULT_PROVIDER_URL",
    "LedgerUnavailable",
    "fetch_ledger",
    "parse_ledger",
    "provider_api_key",
    "provider_url",
]

DEFAULT_PROVIDER_URL = "http://127.0.0.1:8010"


class LedgerUnavailable(Exception):
    """The provider did not answer ``GET /ledger`` with a ledger."""


def provider_url(explicit: str | None = None) -> str:
    """``--provider-url``, else ``PAYMENTS_PROVIDER_URL`` (what payments uses), else the default."""
    return (explicit or os.environ.get("PAYMENTS_PROVIDER_URL") or DEFAULT_PROVIDER_URL).rstrip("/")


def provider_api_key() -> str | None:
    """``PAYMENTS_PROVIDER_API_KEY``: the key payments calls the provider with, which reads
    the ledger too (from the environment only: a key on a command line is in ``ps``)."""
    return os.environ.get("PAYMENTS_PROVIDER_API_KEY") or None


def parse_ledger(data: dict[str, Any]) -> tuple[list[Charge], list[Refund]]:
    """Approved charges and all refunds: a declined charge moved no money, so it needs no
    settling."""
    charges = [
        Charge(c["charge_id"], c["order_id"], int(c["amount_cents"]))
        for c in data["charges"]
        if c["status"] == "approved"
    ]
    refunds = [
        Refund(r["refund_id"], r["charge_id"], int(r["amount_cents"])) for r in data["refunds"]
    ]
    return charges, refunds


def fetch_ledger(
    url: str, *, api_key: str | None = None, timeout: float = 10.0
) -> tuple[list[Charge], list[Refund]]:
    """``GET {url}/ledger`` with ``api_key`` (default: ``provider_api_key()``), parsed; raises
    ``LedgerUnavailable`` with the reason (which never quotes the key)."""
    target = f"{url.rstrip('/')}/ledger"
    key = api_key if api_key is not None else provider_api_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(target, timeout=timeout, headers=headers)
        response.raise_for_status()
        return parse_ledger(response.json())
    except httpx.HTTPError as exc:
        raise LedgerUnavailable(f"{target}: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise LedgerUnavailable(f"{target} did not return a ledger: {exc!r}") from exc
