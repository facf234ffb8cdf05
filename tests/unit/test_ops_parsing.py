"""What operators type: durations, times, ids and ranges; and how ages are shown."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagactl.ops.parsing import format_age, parse_duration, parse_id_range, parse_ids, parse_time

NOW = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("60s", timedelta(seconds=60)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(days=7)),
        ("1h30m", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("0s", timedelta(0)),
        ("90", timedelta(seconds=90)),
        ("P7D", timedelta(days=7)),
        ("PT5M", timedelta(minutes=5)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_durations_in_the_forms_operators_use(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "soon", "-5m", "5 minutes", "m5", "P-1D"])
def test_anything_else_is_refused_with_an_example(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"e\.g\."):
        parse_duration(bad)


@given(st.lists(st.tuples(st.integers(0, 1000), st.sampled_from("smhdw")), min_size=1, max_size=4))
def test_compound_durations_add_up(parts: list[tuple[int, str]]) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == timedelta(seconds=sum(n * seconds[u] for n, u in parts))


def test_times_are_relative_or_iso_and_utc_unless_said_otherwise() -> None:
    assert parse_time("2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_time("now", now=NOW) == NOW
    assert parse_time("2026-11-21T18:30", now=NOW) == datetime(2026, 11, 21, 18, 30, tzinfo=UTC)
    assert parse_time("2026-11-21T18:30Z", now=NOW) == datetime(2026, 11, 21, 18, 30, tzinfo=UTC)
    assert parse_time("2026-11-21", now=NOW) == datetime(2026, 11, 21, tzinfo=UTC)
    assert parse_time("2026-11-21T19:30+01:00", now=NOW) == datetime(
        2026, 11, 21, 18, 30, tzinfo=UTC
    )


@pytest.mark.parametrize("bad", ["yesterday", "1732219200", "21/11/2026"])
def test_ambiguous_or_unknown_times_are_refused(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        parse_time(bad, now=NOW)


def test_ids_and_ranges() -> None:
    assert parse_ids("3,1, 3,7") == [3, 1, 7]
    assert parse_id_range("10-20") == (10, 20)
    assert parse_id_range(" 5 - 5 ") == (5, 5)
    for bad in ("", "a", "1,-2", "0", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_ids(bad)
    for bad in ("20-10", "1-", "a-b", "1..3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_id_range(bad)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.85, "850ms"),
        (4.25, "4.2s"),
        (42, "42s"),
        (192, "3m12s"),
        (7500, "2h05m"),
        (4 * 86400 + 3 * 3600 + 5, "4d03h"),
        (-2, "-2.0s"),
    ],
)
def test_ages_are_short(seconds: float | None, shown: str) -> None:
    assert format_age(seconds) == shown
