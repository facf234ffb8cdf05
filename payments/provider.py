"""The payment provider as payments sees it: a port and its HTTP adapter."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from payments.domain import Charge, ProviderCharge, ProviderRefund, ProviderVoided, Refund
from saga_runtime import RetryableError


class PaymentsError(Exception):
    """Root of the payments service's own errors."""


class ProviderUnavailable(PaymentsError, RetryableError):
    """The provider did not answer (timeout, connection refused) or answered 5xx/429.

    Safe to repeat, every request carrying an idempotency key: the effect
    executor tries again until the effect's deadline.
    """


class ProviderRejected(PaymentsError):
    """The provider refused a request it should have accepted (409, 404, 422): a bug, not a
    blip, so the effect fails at once instead of asking again."""


class PaymentProvider(Protocol):
    def charge(self, request: Charge) -> ProviderCharge | ProviderVoided: ...
    def void_charge(self, idempotency_key: str) -> ProviderCharge | ProviderVoided: ...
    def refund(self, request: Refund) -> ProviderRefund: ...


class HttpPaymentProvider:
    """The provider's REST API over httpx; every call is bounded by the timeouts."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        connect_timeout: float,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            # The key goes in a header, never in a URL or a message (errors quote neither).
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
        )

    def charge(self, request: Charge) -> ProviderCharge | ProviderVoided:
        response = self._send(
            "POST",
            "/charges",
            json={
                "idempotency_key": request.idempotency_key,
                "order_id": request.order_id,
                "amount_cents": request.amount_cents,
                "card_token": request.card_token,
            },
        )
        if response.status_code in (201, 402):  # 402: declined, a definite answer
            return _charge(response)
        if response.status_code == 409 and _json(response).get("code") == "charge_voided":
            return ProviderVoided(request.idempotency_key)
        raise _rejected(response)

    def void_charge(self, idempotency_key: str) -> ProviderCharge | ProviderVoided:
        """The charge under the key, or the key voided so that no charge lands later."""
        response = self._send("POST", "/voids", json={"idempotency_key": idempotency_key})
        if response.status_code == 200:
            return _charge(response)
        if response.status_code == 201:
            return ProviderVoided(idempotency_key)
        raise _rejected(response)

    def refund(self, request: Refund) -> ProviderRefund:
        response = self._send(
            "POST",
            "/refunds",
            json={
                "idempotency_key": request.idempotency_key,
                "charge_id": request.charge_id,
                "amount_cents": request.amount_cents,
            },
        )
        if response.status_code != 201:
            raise _rejected(response)
        body = _json(response)
        return ProviderRefund(
            refund_id=str(body["refund_id"]),
            charge_id=str(body["charge_id"]),
            amount_cents=int(body["amount_cents"]),
        )

    def close(self) -> None:
        self._client.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, url, **kwargs)
        # Timeouts, refused, reset or dropped connections, and an answer cut off or
        # garbled on the way: an outage, never a reason to give a message up as poison.
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise ProviderUnavailable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderUnavailable(
                f"{method} {url}: HTTP {response.status_code} {response.text[:200]}"
            )
        if response.status_code in (401, 403):
            # Our key refused: a rotation half done (the provider has the new key, we the
            # old), or a wrong PAYMENTS_PROVIDER_API_KEY. Retried like an outage until the
            # effect's deadline, so that a refund is never given up over a key.
            raise ProviderUnavailable(
                f"{method} {url}: HTTP {response.status_code}: the provider refused our key"
                " (PAYMENTS_PROVIDER_API_KEY)"
            )
        return response


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderRejected(f"provider answered {response.status_code} without JSON") from exc
    if not isinstance(body, dict):
        raise ProviderRejected(f"provider answered {response.status_code} with {body!r}")
    return body


def _charge(response: httpx.Response) -> ProviderCharge:
    body = _json(response)
    return ProviderCharge(
        charge_id=str(body["charge_id"]),
        approved=body["status"] == "approved",
        amount_cents=int(body["amount_cents"]),
        decline_code=body.get("decline_code"),
        reason=body.get("reason"),
    )


def _rejected(response: httpx.Response) -> ProviderRejected:
    return ProviderRejected(
        f"{response.request.method} {response.request.url.path}:"
        f" HTTP {response.status_code} {response.text[:300]}"
    )
