"""How dead letters hold bytes PostgreSQL's text and jsonb cannot, and how the copy to the
dead-letter topic copes with a producer that fails (fakes only)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given
from hypothesis import strategies as st

from saga_runtime import DeadLetter, DeadLetterPublishError, KafkaDeadLetterPublisher
from saga_runtime.dead_letters import header_from_stored, header_to_stored, storable_text


@given(key=st.text(), value=st.none() | st.binary(max_size=64))
def test_any_header_is_stored_as_json_postgresql_accepts_and_read_back_exactly(
    key: str, value: bytes | None
) -> None:
    stored = header_to_stored(key, value)
    as_json = json.dumps(stored)
    assert "\\u0000" not in as_json, "jsonb refuses \\u0000"
    assert header_from_stored(json.loads(as_json)) == (key, value)


def test_text_headers_keep_the_format_of_existing_rows() -> None:
    assert header_to_stored("event_type", b"OrderApproved") == {
        "key": "event_type",
        "value": "OrderApproved",
    }
    assert header_to_stored("empty", None) == {"key": "empty", "value": None}
    assert header_from_stored({"key": "event_type", "value": "OrderApproved"}) == (
        "event_type",
        b"OrderApproved",
    )


@pytest.mark.parametrize("value", [b"a\x00b", b"\xff\xfe", b"\xc3\x28"])
def test_bytes_that_are_not_storable_text_go_base64_under_a_marker(value: bytes) -> None:
    stored = header_to_stored("trace", value)
    assert set(stored) == {"key", "value_base64"}
    assert header_from_stored(stored) == ("trace", value)


def test_a_key_with_a_nul_or_a_lone_surrogate_is_kept_exactly() -> None:
    for key in ("a\x00b", "x\udc80"):
        stored = header_to_stored(key, b"v")
        assert "key" not in stored and header_from_stored(stored) == (key, b"v")


def test_error_texts_are_made_storable_without_losing_what_they_said() -> None:
    assert storable_text("bad \x00 and \ud800") == "bad \\x00 and \\ud800"


def letter(**overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "source_topic": "orders.events",
        "source_partition": 0,
        "source_offset": 3,
        "key": b"order-1",
        "value": b"\xff poison",
        "headers": [("trace", b"a\x00b")],
        "error_type": "InvalidEnvelopeError",
        "error": "not an envelope",
        "attempts": 1,
    }
    return DeadLetter(**{**fields, **overrides})


class FakeProducer:
    """confluent_kafka.Producer's produce/flush/poll, failing as told."""

    def __init__(self, *failures: BaseException | KafkaError | None) -> None:
        self.failures = list(failures)  # one per produce: raised, or reported on delivery
        self.sent: list[dict[str, Any]] = []
        self._reports: list[tuple[Any, KafkaError | None]] = []

    def produce(self, topic: str, *, on_delivery: Any, **message: Any) -> None:
        failure = self.failures.pop(0) if self.failures else None
        if isinstance(failure, BaseException):
            raise failure
        self.sent.append(message)
        self._reports.append((on_delivery, failure))

    def flush(self, timeout: float) -> int:
        for on_delivery, error in self._reports:
            on_delivery(error, None)
        self._reports.clear()
        return 0

    def poll(self, timeout: float) -> int:
        return 0


@pytest.mark.parametrize(
    "failure",
    [
        BufferError("Local: Queue full"),
        KafkaException(KafkaError(KafkaError._TRANSPORT)),
        KafkaError(KafkaError._MSG_TIMED_OUT),
    ],
    ids=["queue full", "produce raised", "delivery failed"],
)
def test_a_failing_producer_is_a_publish_error_the_consumer_retries(failure: Any) -> None:
    publisher = KafkaDeadLetterPublisher(
        FakeProducer(failure), topic="stock.dead-letters", service="stock"
    )  # type: ignore[arg-type]
    with pytest.raises(DeadLetterPublishError):
        publisher.publish(letter())


@pytest.mark.parametrize(
    "failure",
    [KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), KafkaError(10)],
    ids=["refused by the client", "refused by the broker"],
)
def test_a_copy_too_large_for_the_topic_is_sent_reduced_not_retried_for_ever(
    failure: Any,
) -> None:
    producer = FakeProducer(failure)
    publisher = KafkaDeadLetterPublisher(producer, topic="stock.dead-letters", service="stock")  # type: ignore[arg-type]
    publisher.publish(letter(value=b"x" * 2_000_000))
    reduced = producer.sent[-1]
    assert reduced["value"] is None and reduced["key"] == b"order-1"
    headers = dict(reduced["headers"])
    assert headers["dlq.error_type"] == b"InvalidEnvelopeError"
    assert b"the full message is in the table" in headers["dlq.reduced"]
    assert "trace" not in headers
