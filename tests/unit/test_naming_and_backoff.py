from __future__ import annotations

import pytest

from saga_runtime import (
    Backoff,
    ConfigurationError,
    consumer_group,
    dead_letter_topic,
    events_topic,
    notify_channel,
)
from saga_runtime.faults import _parse


def test_names_derive_from_the_owning_service() -> None:
    assert events_topic("stock") == "stock.events"
    assert events_topic("stock", "t1.") == "t1.stock.events"
    assert dead_letter_topic("payments") == "payments.dead-letters"
    assert consumer_group("orders", "t1.") == "t1.orders"
    assert notify_channel("orders") == "orders_outbox"


@pytest.mark.parametrize("bad", ["", "Orders", "orders; drop table x", "1stock", "a-b"])
def test_service_names_that_would_be_unsafe_identifiers_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        events_topic(bad)


def test_backoff_doubles_up_to_the_maximum_and_resets() -> None:
    backoff = Backoff(initial=0.1, maximum=0.5)
    delays = [backoff.next_delay() for _ in range(6)]
    assert 0.08 <= delays[0] <= 0.1
    assert all(0.4 <= d <= 0.5 for d in delays[3:])
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_crash_points_parse_with_optional_probability() -> None:
    assert _parse("") == {}
    assert _parse("relay.after_publish, payments.after_charge@0.25") == {
        "relay.after_publish": 1.0,
        "payments.after_charge": 0.25,
    }


def test_a_crash_point_armed_with_raise_raises_in_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from saga_runtime import faults

    monkeypatch.setattr(faults, "_POINTS", _parse("raise:consumer.polled, relay.after_publish@0"))
    with pytest.raises(faults.CrashPointError, match=r"consumer\.polled"):
        faults.crash_point("consumer.polled")
    faults.crash_point("relay.after_publish")  # armed to kill, with probability 0
    faults.crash_point("payments.after_charge")  # not armed
