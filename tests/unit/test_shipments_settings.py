"""Shipments' settings and composition root, and the simulated carrier's answers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shipments.bootstrap import compose
from shipments.carrier import SimulatedCarrier
from shipments.settings import ShipmentsSettings

REQUEST = {"order_id": "o-1", "estimated_delivery": "2026-12-05"}


def test_bookings_run_two_hundred_and_more_at_once_and_wait_half_an_hour_by_default() -> None:
    settings = ShipmentsSettings()
    assert settings.effects.concurrency == 256
    # Also when other executor settings are given in code (tests, a composition root).
    assert ShipmentsSettings.model_validate({"effects": {"lease": 5}}).effects.concurrency == 256
    assert settings.booking_deadline == timedelta(minutes=30)
    assert settings.booking_seconds == 0.0


def test_the_effects_variables_and_the_booking_settings_still_set_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EFFECTS_CONCURRENCY", "8")
    monkeypatch.setenv("EFFECTS_LEASE", "90")
    monkeypatch.setenv("SHIPMENTS_BOOKING_DEADLINE", "PT2M")
    monkeypatch.setenv("SHIPMENTS_BOOKING_SECONDS", "2")
    settings = ShipmentsSettings()
    assert (settings.effects.concurrency, settings.effects.lease) == (8, 90.0)
    dependencies = compose(settings).dependencies
    assert dependencies["booking_deadline"] == timedelta(minutes=2)
    assert dependencies["carrier_api"] == SimulatedCarrier(booking_seconds=2.0)


def test_a_deadline_must_leave_the_carrier_some_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPMENTS_BOOKING_DEADLINE", "0")
    with pytest.raises(ValueError, match="booking_deadline"):
        ShipmentsSettings()


def test_the_simulated_carrier_answers_a_repeated_key_with_its_first_answer() -> None:
    slept: list[float] = []
    carrier = SimulatedCarrier(booking_seconds=2.0, sleep=slept.append)
    first = carrier.book(REQUEST, "shipments:o-1:book")
    assert carrier.book(REQUEST, "shipments:o-1:book") == first
    assert first["estimated_delivery"] == "2026-12-05"
    assert first["shipment_id"].startswith("shp_")
    assert carrier.book(REQUEST, "shipments:o-2:book")["shipment_id"] != first["shipment_id"]
    assert slept == [2.0, 2.0, 2.0], "each call takes the carrier's time"
