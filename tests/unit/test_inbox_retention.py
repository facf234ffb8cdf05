"""The inbox retention check: longer than every topic's retention, or refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from saga_runtime import ConfigurationError, InboxSettings, check_inbox_retention

DAY = timedelta(days=1)


def test_a_retention_longer_than_every_topics_is_accepted() -> None:
    assert check_inbox_retention(30 * DAY, {"a.events": 7 * DAY, "b.events": 29 * DAY}) == []


@pytest.mark.parametrize("topic_retention", [30 * DAY, 31 * DAY])
def test_a_retention_a_topic_keeps_events_as_long_or_longer_is_refused(
    topic_retention: timedelta,
) -> None:
    with pytest.raises(ConfigurationError, match=r"b\.events"):
        check_inbox_retention(30 * DAY, {"a.events": 7 * DAY, "b.events": topic_retention})


def test_topics_kept_forever_are_returned_for_a_warning_not_refused() -> None:
    assert check_inbox_retention(30 * DAY, {"a.events": None, "b.events": DAY}) == ["a.events"]


def test_the_setting_defaults_to_30_days_and_reads_inbox_retention(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("INBOX_RETENTION", raising=False)
    assert InboxSettings().retention == 30 * DAY
    monkeypatch.setenv("INBOX_RETENTION", "P45D")
    assert InboxSettings().retention == 45 * DAY
    monkeypatch.setenv("INBOX_RETENTION", "PT1H")
    assert InboxSettings().retention == timedelta(hours=1)
