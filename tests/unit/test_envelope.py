from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest

from saga_runtime import Envelope, Event, InvalidEnvelopeError, PoisonMessageError
from saga_runtime import envelope as envelope_module
from saga_runtime.envelope import unstorable_text


class ThingHappened(Event):
    event_type = "ThingHappened"
    schema_version = 2
    amount: int

    @staticmethod
    def upcast_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
        # A version 2 without its step from version 1 is refused at definition.
        return {"amount": payload.pop("qty"), **payload}


def test_new_event_starts_a_saga_and_child_events_inherit_it() -> None:
    root = Envelope.new(ThingHappened(amount=1), aggregate_id="o-1", producer="orders")
    child = Envelope.new(ThingHappened(amount=2), aggregate_id="o-1", producer="stock", cause=root)

    assert root.causation_id is None
    assert child.correlation_id == root.correlation_id
    assert child.causation_id == root.event_id
    assert child.event_id != root.event_id
    assert (child.event_type, child.schema_version, child.payload) == (
        "ThingHappened",
        2,
        {"amount": 2},
    )


def test_round_trip_through_bytes_is_lossless() -> None:
    env = Envelope.new(ThingHappened(amount=7), aggregate_id="o-1", producer="orders")
    assert Envelope.from_bytes(env.to_bytes()) == env


def test_occurred_at_is_normalised_to_utc_and_must_carry_a_zone() -> None:
    plus_two = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    env = Envelope(
        event_type="X", aggregate_id="o", correlation_id=uuid4(), producer="p", occurred_at=plus_two
    )
    assert env.occurred_at.utcoffset() == timedelta(0) and env.occurred_at.hour == 10
    with pytest.raises(ValueError):
        Envelope(
            event_type="X",
            aggregate_id="o",
            correlation_id=uuid4(),
            producer="p",
            occurred_at=datetime(2026, 1, 1),
        )


def test_unknown_fields_are_tolerated_on_the_envelope_and_the_payload() -> None:
    env = Envelope.new(ThingHappened(amount=3), aggregate_id="o-1", producer="orders")
    wire = json.loads(env.to_bytes())
    wire["added_later"] = True
    wire["payload"]["also_new"] = "x"
    parsed = Envelope.from_bytes(json.dumps(wire).encode())
    assert parsed.event_id == env.event_id
    assert parsed.payload_as(ThingHappened) == ThingHappened(amount=3)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"event_type": "X"}',
        b'{"event_type": "", "aggregate_id": "o"}',
    ],
)
def test_anything_but_a_valid_envelope_is_poison(raw: bytes | None) -> None:
    with pytest.raises(InvalidEnvelopeError):
        Envelope.from_bytes(raw)


def test_a_payload_that_does_not_match_its_model_is_poison_not_a_retry() -> None:
    env = Envelope.new(ThingHappened(amount=3), aggregate_id="o-1", producer="orders")
    broken = env.model_copy(update={"payload": {"amount": "lots"}})
    with pytest.raises(PoisonMessageError):
        broken.payload_as(ThingHappened)


def test_headers_carry_id_type_and_correlation() -> None:
    env = Envelope.new(ThingHappened(amount=3), aggregate_id="o-1", producer="orders")
    assert dict(env.kafka_headers()) == {
        "event_id": str(env.event_id).encode(),
        "event_type": b"ThingHappened",
        "correlation_id": str(env.correlation_id).encode(),
    }


def test_envelope_is_immutable() -> None:
    env = Envelope.new(ThingHappened(amount=3), aggregate_id="o-1", producer="orders")
    with pytest.raises(ValueError):
        env.aggregate_id = "other"  # type: ignore[misc]


def _wire(**fields: object) -> bytes:
    base: dict[str, object] = {
        "event_type": "ThingHappened",
        "aggregate_id": "o-1",
        "correlation_id": str(uuid4()),
        "producer": "orders",
        "payload": {"amount": 1},
    }
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize(
    "fields",
    [
        {"aggregate_id": "o-1\u0000"},
        {"event_type": "Thing\u0000Happened"},
        {"producer": "\u0000"},
        {"payload": {"amount": 1, "note": "a\u0000b"}},
        {"payload": {"lines": [{"sku": "A\u0000"}]}},
        {"payload": {"key\u0000": 1}},
    ],
    ids=["aggregate_id", "event_type", "producer", "payload", "nested", "payload key"],
)
def test_text_postgresql_cannot_store_is_poison(fields: dict[str, object]) -> None:
    """A NUL anywhere would fail the handler's INSERT (a DataError, not a clean dead letter)."""
    with pytest.raises(InvalidEnvelopeError, match="NUL"):
        Envelope.from_bytes(_wire(**fields))


@pytest.mark.parametrize(
    "fields",
    [{"payload": {"note": ["x", "\udfff"]}}, {"payload": {"\ud800": 1}}],
    ids=["payload value", "payload key"],
)
def test_a_lone_surrogate_is_refused_when_built_in_python_too(fields: dict[str, object]) -> None:
    # JSON on the wire with "\ud800" is already refused by the parser, and so are str
    # fields; a payload built in Python must meet the same rule, not fail later in jsonb.
    base: dict[str, object] = {
        "event_type": "ThingHappened",
        "aggregate_id": "o-1",
        "correlation_id": uuid4(),
        "producer": "orders",
    }
    with pytest.raises(ValueError, match="surrogate"):
        Envelope(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        {"order_id": "o-1", "lines": [{"sku": "A", "quantity": 2}], "total": 1.5, "ok": None},
        {"name": "NUL\x00inside"},
        {"key\x00": "a NUL in a key"},
        {"deep": [[{"x": ["fine", "bad\x00"]}]]},
        {"text": "a lone \ud800 surrogate"},
        {"\udfff": "a surrogate in a key"},
        {"literal": "backslash u0000 written out: \\u0000, not a NUL"},
        {"an id": uuid4(), "then": "NUL\x00"},
        {"an id": uuid4()},
        {1: "an int key", "x": ("a", "tuple\x00")},
        ["a", "list", {"of": "\x00"}],
        ("fine", "tuple"),
        [],
        {},
        "plain text",
        "text with \x00",
        42,
    ],
)
def test_unstorable_text_says_the_same_as_a_walk_through_every_text(value: object) -> None:
    """The check every payload goes through, written and read, takes a fast path for plain
    JSON; it must judge exactly as looking at every key and string (``_walk``) does."""
    assert unstorable_text(value) == envelope_module._walk(value)


def test_unstorable_text_of_a_payload_nested_deeper_than_json_goes_answers_as_the_walk() -> None:
    """The JSON encoder gives up a few levels before a walk would: there the walk answers."""

    def nested(depth: int) -> object:
        value: object = "fine"
        for _ in range(depth):
            value = [value]
        return value

    depth = 1
    while True:
        try:
            json.dumps(nested(depth))
        except RecursionError:
            break
        depth += 1

    def answer(check: Any, value: object) -> object:
        try:
            return check(value)
        except RecursionError:
            return RecursionError

    value = nested(depth)
    assert answer(unstorable_text, value) == answer(envelope_module._walk, value)
