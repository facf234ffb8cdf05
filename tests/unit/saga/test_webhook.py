"""The webhook channel: HMAC signatures, their verification, and retries inside one call."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifications.domain import Notification
from notifications.errors import DeliveryRejected
from notifications.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    WebhookClient,
    payload,
    sign,
    verify,
)
from saga_runtime import RetryableError

NOTIFICATION = Notification(
    order_id="o-1",
    kind="order_shipped",
    recipient="ada@example.com",
    subject="Your order o-1 has shipped",
    body="Your order o-1 is on its way.\n",
)


def test_signature_matches_a_published_hmac_sha256_vector() -> None:
    # The well-known HMAC-SHA256 example: key "key", the quick brown fox.
    body = b"The quick brown fox jumps over the lazy dog"
    assert sign(body, "key") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


@given(st.binary(max_size=512), st.text(min_size=1, max_size=40))
def test_signature_is_hmac_sha256_of_the_body_and_verifies(body: bytes, secret: str) -> None:
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert sign(body, secret) == f"sha256={expected}"
    assert verify(body, secret, sign(body, secret))


@given(st.binary(min_size=1, max_size=256), st.data())
def test_any_change_to_the_body_breaks_the_signature(body: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
    assert not verify(tampered, "s3cret", sign(body, "s3cret"))


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        sign(b"{}", "other secret"),
        sign(b"{}", "s3cret").removeprefix("sha256="),
        sign(b"{}", "s3cret").replace("sha256=", "sha1="),
        "sha256=" + "0" * 64,
    ],
)
def test_verify_rejects_wrong_or_malformed_signatures(signature: str | None) -> None:
    assert not verify(b"{}", "s3cret", signature)


def test_payload_is_the_notification_as_sorted_json() -> None:
    body = payload(NOTIFICATION)
    document = json.loads(body)
    assert document == {
        "delivery_id": NOTIFICATION.delivery_id,
        "order_id": "o-1",
        "kind": "order_shipped",
        "recipient": "ada@example.com",
        "subject": "Your order o-1 has shipped",
        "body": "Your order o-1 is on its way.\n",
        "message_id": "<o-1.order_shipped@saga-outbox>",
    }
    assert body == payload(NOTIFICATION), "same notification, same bytes, same signature"


@dataclass
class FakeTransport:
    """Answers with the given statuses in turn (an exception instance is raised instead)."""

    answers: list[int | OSError]
    calls: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        self.calls.append((url, body, dict(headers)))
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer


def client(transport: FakeTransport, sleeps: list[float], attempts: int = 3) -> WebhookClient:
    return WebhookClient(
        url="http://hooks.example/saga",
        secret="s3cret",
        attempts=attempts,
        transport=transport,
        sleep=sleeps.append,
    )


def test_a_delivery_is_signed_and_identified() -> None:
    transport, sleeps = FakeTransport([204]), list[float]()
    client(transport, sleeps).post(NOTIFICATION)
    [(url, body, headers)] = transport.calls
    assert url == "http://hooks.example/saga"
    assert body == payload(NOTIFICATION)
    assert verify(body, "s3cret", headers[SIGNATURE_HEADER])
    assert headers[DELIVERY_HEADER] == NOTIFICATION.delivery_id
    assert headers["Content-Type"] == "application/json"
    assert sleeps == []


def test_transient_failures_are_retried_within_the_call_with_the_same_request() -> None:
    transport, sleeps = FakeTransport([503, ConnectionRefusedError(), 429, 200]), list[float]()
    client(transport, sleeps, attempts=4).post(NOTIFICATION)
    assert len(transport.calls) == 4
    assert len({(body, headers[DELIVERY_HEADER]) for _, body, headers in transport.calls}) == 1
    assert len(sleeps) == 3 and all(s > 0 for s in sleeps)
    assert sleeps[2] > sleeps[0], "backs off"


def test_gives_up_with_a_retryable_error_after_the_attempts() -> None:
    transport, sleeps = FakeTransport([500, TimeoutError(), 502, 200]), list[float]()
    with pytest.raises(RetryableError, match="3 times"):
        client(transport, sleeps, attempts=3).post(NOTIFICATION)
    assert len(transport.calls) == 3
    assert len(sleeps) == 2, "no pointless wait after the last attempt"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_a_client_error_is_a_permanent_refusal_not_retried(status: int) -> None:
    transport, sleeps = FakeTransport([status, 200]), list[float]()
    with pytest.raises(DeliveryRejected, match=str(status)):
        client(transport, sleeps).post(NOTIFICATION)
    assert len(transport.calls) == 1
