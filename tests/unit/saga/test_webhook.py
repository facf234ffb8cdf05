"""The webhook channel: HMAC signatures, their verification, and what a POST's answer becomes."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifications.domain import Notification
from notifications.errors import DeliveryRejected
from notifications.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    WebhookClient,
    check_signature,
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


T = 1_700_000_000  # a fixed signing time
SECRET = "s3cret"


def at(t: float) -> Callable[[], float]:
    return lambda: t


def test_signature_is_hmac_sha256_of_the_timestamp_dot_body() -> None:
    # Computed independently: HMAC-SHA256("key", "1700000000.The quick brown fox ...").
    body = b"The quick brown fox jumps over the lazy dog"
    expected = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(body, "key", timestamp=T) == f"t=1700000000,v1={expected}"


@given(st.binary(max_size=512), st.text(min_size=1, max_size=40), st.integers(0, 10**12 - 1))
def test_a_signature_verifies_at_its_time(body: bytes, secret: str, t: int) -> None:
    header = sign(body, secret, timestamp=t)
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={t},v1={expected}"
    assert verify(body, secret, header, now=at(t))
    assert verify(body, secret, header.encode(), now=at(t)), "bytes as a framework hands them"


@given(st.binary(min_size=1, max_size=256), st.data())
def test_any_change_to_the_body_breaks_the_signature(body: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
    assert not verify(tampered, SECRET, sign(body, SECRET, timestamp=T), now=at(T))


def test_a_replay_outside_the_tolerance_is_refused_either_way() -> None:
    header = sign(b"{}", SECRET, timestamp=T)
    assert verify(b"{}", SECRET, header, now=at(T + 300))
    assert verify(b"{}", SECRET, header, now=at(T - 300))
    assert not verify(b"{}", SECRET, header, now=at(T + 301)), "replayed later"
    assert not verify(b"{}", SECRET, header, now=at(T - 301)), "from the future"
    assert verify(b"{}", SECRET, header, tolerance=3600, now=at(T + 3000))
    with pytest.raises(SignatureError, match="tolerance"):
        check_signature(b"{}", SECRET, header, now=at(T + 301))


def test_the_timestamp_is_signed_too() -> None:
    header = sign(b"{}", SECRET, timestamp=T)
    moved = header.replace(f"t={T}", f"t={T + 1000}")
    assert not verify(b"{}", SECRET, moved, now=at(T + 1000))


def test_rotation_several_v1_values_and_several_secrets() -> None:
    both = sign(b"{}", ["new", "old"], timestamp=T)
    assert both.count("v1=") == 2
    assert verify(b"{}", "new", both, now=at(T))
    assert verify(b"{}", "old", both, now=at(T))
    assert verify(b"{}", ["old", "other"], sign(b"{}", "old", timestamp=T), now=at(T))
    assert not verify(b"{}", ["a", "b"], both, now=at(T))
    # Unknown schemes are ignored, as long as one v1 matches.
    assert verify(b"{}", "new", f"{both},v0=abc,v2=zz", now=at(T))


GOOD = sign(b"{}", SECRET, timestamp=T)
V1 = GOOD.split(",v1=")[1]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        sign(b"{}", "other secret", timestamp=T),
        f"sha256={V1}",  # the old scheme
        f"v1={V1}",  # no timestamp
        f"t={T}",  # no signature
        f"t={T},t={T},v1={V1}",  # two timestamps
        f"t=,v1={V1}",
        f"t=-{T},v1={V1}",
        f"t={T}.5,v1={V1}",
        f"t=1e9,v1={V1}",
        "t=" + "9" * 5000 + f",v1={V1}",  # int() of that many digits raises ValueError
        f"t=\u0661\u0667\u0660\u0660,v1={V1}",  # Arabic-Indic digits: isdigit() but not ASCII
        f"t={T},v1={V1.upper()}",
        f"t={T},v1={V1[:-1]}",
        f"t={T},v1={V1}0",
        f"t={T};v1={V1}",
        f"t={T},v1={V1},garbage",
        f"t={T},v1={V1[:-1]}\u00e9",  # non-ASCII
        f"t={T},v1=\u00e9{V1}",
        "\ud800",  # a lone surrogate
        "t=\x00,v1=\x00",
        f"t={T},v1={V1}".encode("utf-16"),  # bytes that are not ASCII
        b"\xff\xfe",
        "," * 10_000,
        12345,  # not even text
    ],
)
def test_a_missing_malformed_or_wrong_header_is_refused_cleanly(header: object) -> None:
    assert not verify(b"{}", SECRET, header, now=at(T))  # type: ignore[arg-type]
    with pytest.raises(SignatureError):
        check_signature(b"{}", SECRET, header, now=at(T))  # type: ignore[arg-type]


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_verify_never_raises_for_any_header(header: str | bytes) -> None:
    assert not verify(b"{}", SECRET, header, now=at(T))


@given(st.lists(st.sampled_from(["t", "v1", "v0", "=", ",", " ", str(T), V1, "\u00e9"])))
def test_verify_never_raises_for_near_miss_headers(parts: list[str]) -> None:
    header = "".join(parts)
    if verify(b"{}", SECRET, header, now=at(T)):
        assert f"t={T}" in header and f"v1={V1}" in header


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


def client(transport: FakeTransport, **kwargs: Any) -> WebhookClient:
    clock = iter(range(T, T + 1000, 7))  # each reading is 7 s later
    return WebhookClient(
        url="http://hooks.example/saga",
        secret="s3cret",
        transport=transport,
        clock=lambda: next(clock),
        **kwargs,
    )


def test_a_delivery_is_signed_and_identified() -> None:
    transport = FakeTransport([204])
    client(transport).post(NOTIFICATION)
    [(url, body, headers)] = transport.calls
    assert url == "http://hooks.example/saga"
    assert body == payload(NOTIFICATION)
    assert headers[SIGNATURE_HEADER].startswith(f"t={T},v1=")
    assert verify(body, "s3cret", headers[SIGNATURE_HEADER], now=at(T))
    assert headers[DELIVERY_HEADER] == NOTIFICATION.delivery_id
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("failure", [503, 429, ConnectionRefusedError(), TimeoutError()])
def test_a_transient_failure_is_a_retryable_error_at_once(failure: int | OSError) -> None:
    """No retries within the call: the effect executor tries again later, holding nothing."""
    transport = FakeTransport([failure, 204])
    with pytest.raises(RetryableError, match="webhook"):
        client(transport).post(NOTIFICATION)
    assert len(transport.calls) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_a_client_error_is_a_permanent_refusal(status: int) -> None:
    transport = FakeTransport([status, 200])
    with pytest.raises(DeliveryRejected, match=str(status)):
        client(transport).post(NOTIFICATION)
    assert len(transport.calls) == 1


def test_each_attempt_is_signed_afresh_and_verifies_at_its_own_time() -> None:
    transport = FakeTransport([503, 204])
    hook = client(transport)
    with pytest.raises(RetryableError):
        hook.post(NOTIFICATION)
    hook.post(NOTIFICATION)  # the executor's next attempt
    (_, body, first), (_, same_body, second) = transport.calls
    assert body == same_body and first[DELIVERY_HEADER] == second[DELIVERY_HEADER]
    assert first[SIGNATURE_HEADER].startswith(f"t={T},")
    assert second[SIGNATURE_HEADER].startswith(f"t={T + 7},")
    assert verify(body, "s3cret", second[SIGNATURE_HEADER], now=at(T + 7))


def test_during_a_rotation_both_secrets_sign() -> None:
    transport = FakeTransport([204])
    client(transport, previous_secrets=["old"]).post(NOTIFICATION)
    [(_, body, headers)] = transport.calls
    assert headers[SIGNATURE_HEADER].count("v1=") == 2
    assert verify(body, "s3cret", headers[SIGNATURE_HEADER], now=at(T))
    assert verify(body, "old", headers[SIGNATURE_HEADER], now=at(T))


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_end_in_a_retryable_error(status: int) -> None:
    with pytest.raises(RetryableError, match=f"HTTP {status}"):
        client(FakeTransport([status])).post(NOTIFICATION)


@pytest.mark.parametrize("status", [301, 302, 307, 308, 405, 413])
def test_redirects_and_other_refusals_are_permanent(status: int) -> None:
    with pytest.raises(DeliveryRejected, match="for good"):
        client(FakeTransport([status])).post(NOTIFICATION)
