"""``schema_version`` on the way in: upcast what is older, refuse what is newer.

One event, ``OrderPlaced``, in three versions as three producers would have
written it: version 2 adds the currency (all orders before it were in euros),
version 3 keeps the total in cents.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from saga_runtime import Envelope, Event, PoisonMessageError


class OrderPlacedV1(Event):
    event_type = "OrderPlaced"
    order_id: str
    total: int


class OrderPlaced(Event):
    event_type = "OrderPlaced"
    schema_version = 2
    order_id: str
    total: int
    currency: str

    @staticmethod
    def upcast_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
        payload["currency"] = "EUR"  # in place, as upcasters often are
        return payload


class OrderPlacedV3(Event):
    event_type = "OrderPlaced"
    schema_version = 3
    order_id: str
    total_cents: int
    currency: str

    upcast_v1_v2 = staticmethod(OrderPlaced.upcast_v1_v2)

    @classmethod
    def upcast_v2_v3(cls, payload: dict[str, Any]) -> dict[str, Any]:
        total = payload.pop("total")
        return {**payload, "total_cents": total * 100}


def placed(event: Event) -> Envelope:
    return Envelope.new(event, aggregate_id="o-1", producer="orders")


def test_an_envelope_of_the_models_own_version_is_read_as_it_is() -> None:
    env = placed(OrderPlaced(order_id="o-1", total=12, currency="USD"))
    assert env.schema_version == 2
    assert env.payload_as(OrderPlaced) == OrderPlaced(order_id="o-1", total=12, currency="USD")


def test_an_older_envelope_is_upcast_and_the_envelope_itself_is_left_as_it_was() -> None:
    env = placed(OrderPlacedV1(order_id="o-1", total=12))
    assert env.schema_version == 1

    assert env.payload_as(OrderPlaced) == OrderPlaced(order_id="o-1", total=12, currency="EUR")
    assert env.payload == {"order_id": "o-1", "total": 12}, "upcast on a copy"


def test_upcasters_run_step_by_step_from_the_envelopes_version() -> None:
    v1 = placed(OrderPlacedV1(order_id="o-1", total=12))
    v2 = placed(OrderPlaced(order_id="o-1", total=12, currency="USD"))

    assert v1.payload_as(OrderPlacedV3) == OrderPlacedV3(
        order_id="o-1", total_cents=1200, currency="EUR"
    )
    assert v2.payload_as(OrderPlacedV3) == OrderPlacedV3(
        order_id="o-1", total_cents=1200, currency="USD"
    )


def test_a_newer_envelope_than_the_consumer_knows_is_poison_naming_type_and_versions() -> None:
    env = placed(OrderPlacedV3(order_id="o-1", total_cents=1200, currency="EUR"))

    with pytest.raises(PoisonMessageError) as caught:
        env.payload_as(OrderPlaced)
    assert str(caught.value) == (
        "OrderPlaced schema_version 3 is newer than this service understands (2);"
        " deploy its consumers before its producer"
    )


def test_a_newer_envelope_is_poison_even_when_its_payload_would_validate() -> None:
    # Same fields, a new meaning: guessing would be silently wrong.
    env = placed(OrderPlaced(order_id="o-1", total=12, currency="EUR"))
    with pytest.raises(PoisonMessageError, match=r"schema_version 2 is newer .* \(1\)"):
        env.payload_as(OrderPlacedV1)


def test_a_class_missing_an_upcaster_step_is_refused_when_it_is_defined() -> None:
    with pytest.raises(TypeError, match="schema_version 3 but has no upcast_v2_v3"):

        class Skipped(Event):
            event_type = "Skipped"
            schema_version = 3

            @staticmethod
            def upcast_v1_v2(payload: dict[str, Any]) -> dict[str, Any]:
                return payload

    with pytest.raises(TypeError, match="no upcast_v1_v2"):

        class Bumped(Event):
            event_type = "Bumped"
            schema_version = 2


@pytest.mark.parametrize("name", ["upcast_v2_v3", "upcast_v1_v3"])
def test_an_upcaster_that_does_not_fit_the_version_is_refused_when_it_is_defined(
    name: str,
) -> None:
    # upcast_v2_v3 on a version 2 class: the bump to 3 was forgotten, so the producer
    # would send the new shape under the old number.
    body: dict[str, Any] = {
        "event_type": "Forgot",
        "schema_version": 2,
        "upcast_v1_v2": staticmethod(lambda payload: payload),
        name: staticmethod(lambda payload: payload),
    }
    with pytest.raises(TypeError, match=f"{name} does not fit schema_version 2"):
        type("Forgot", (Event,), body)


@pytest.mark.parametrize("version", [0, -1, True, "2"])
def test_a_schema_version_that_is_not_a_positive_integer_is_refused(version: object) -> None:
    with pytest.raises(TypeError, match="schema_version must be an integer >= 1"):
        type("Odd", (Event,), {"event_type": "Odd", "schema_version": version})


class Fragile(Event):
    event_type = "Fragile"
    schema_version = 2
    amount: int

    @staticmethod
    def upcast_v1_v2(payload: dict[str, Any]) -> Any:
        if "return" in payload:
            return payload["return"]
        return {"amount": payload["qty"]}


@pytest.mark.parametrize(
    ("v1_payload", "reason"),
    [
        ({}, r"Fragile schema_version 1: Fragile.upcast_v1_v2 failed: KeyError\('qty'\)"),
        ({"return": None}, "Fragile.upcast_v1_v2 returned NoneType, not a payload dict"),
        ({"return": ["qty", 1]}, "Fragile.upcast_v1_v2 returned list, not a payload dict"),
        ({"qty": "lots"}, r"invalid Fragile payload \(upcast from v1 to v2\)"),
    ],
    ids=["raises", "returns None", "returns a list", "returns an invalid payload"],
)
def test_an_upcaster_that_fails_is_poison_with_its_reason(
    v1_payload: dict[str, Any], reason: str
) -> None:
    env = Envelope(
        event_type="Fragile",
        schema_version=1,
        aggregate_id="o-1",
        correlation_id=uuid4(),
        producer="orders",
        payload=v1_payload,
    )
    with pytest.raises(PoisonMessageError, match=reason):
        env.payload_as(Fragile)
