"""The relay benchmark's pure parts: arrivals, latencies, settings overrides, the summary."""

from __future__ import annotations

import argparse

import pytest

from saga_harness.bench.cli import add_relay_parser
from saga_harness.bench.relay_figures import check_arrivals, commit_to_ack, per_second
from saga_harness.bench.relay_process import parse_overrides
from saga_harness.bench.render import relay_summary

WRITTEN = {"e1": ("a", 0), "e2": ("a", 1), "e3": ("b", 0), "e4": ("a", 2)}


def test_every_event_arriving_in_order_is_a_clean_check():
    check = check_arrivals(WRITTEN, ["e1", "e3", "e2", "e4"])
    assert check.as_dict() == {
        "expected": 4,
        "messages": 4,
        "arrived": 4,
        "missing": 0,
        "duplicates": 0,
        "unexpected": 0,
        "order_violations": 0,
    }


def test_duplicates_count_but_only_first_deliveries_decide_the_order():
    # e1 again after e2: a redelivery (at least once), not a reordering.
    check = check_arrivals(WRITTEN, ["e1", "e2", "e1", "e4", "e3", "e3"])
    assert (check.arrived, check.duplicates, check.order_violations) == (4, 2, 0)


def test_an_aggregates_event_arriving_before_an_earlier_one_is_a_violation():
    check = check_arrivals(WRITTEN, ["e2", "e1", "e4", "x"])
    assert check.order_violations == 1
    assert check.missing == 1  # e3
    assert check.unexpected == 1  # x was never written


def test_commit_to_ack_uses_the_first_append_and_skips_the_warmup_and_the_unseen():
    committed = {"e1": 10.0, "e2": 11.0, "e3": 12.0}
    appended = {"e2": 11.004, "e3": 12.010}
    assert commit_to_ack(committed, appended, since=10.5) == pytest.approx([0.004, 0.010])


def test_per_second_groups_by_commit_second_from_the_start():
    committed = {"a": 100.1, "b": 100.9, "c": 101.5, "d": 103.0}
    appended = {"a": 100.102, "b": 100.904, "c": 101.52}
    rows = per_second(committed, appended, start=100.0)
    assert [(r["second"], r["count"]) for r in rows] == [(0, 2), (1, 1)]
    assert rows[0]["max"] == pytest.approx(4.0)


def test_overrides_take_relay_and_kafka_client_settings_only():
    assert parse_overrides(["RELAY_BATCH_SIZE=1000", 'KAFKA_CLIENT_CONFIG={"a": "1"}']) == {
        "RELAY_BATCH_SIZE": "1000",
        "KAFKA_CLIENT_CONFIG": '{"a": "1"}',
    }
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_overrides(["RELAY_BATCH_SIZE"])
    with pytest.raises(ValueError, match="only RELAY_"):
        parse_overrides(["DATABASE_URL=postgresql://elsewhere"])


def test_the_parser_is_a_bench_subcommand_with_the_documented_defaults():
    parser = argparse.ArgumentParser()
    kinds = parser.add_subparsers(dest="bench")
    add_relay_parser(kinds)
    args = parser.parse_args(["relay"])
    assert (args.rows, args.rate, args.duration, args.only, args.relay) == (
        100_000,
        1000.0,
        30.0,
        None,
        "process",
    )
    args = parser.parse_args(["relay", "--only", "steady", "--set", "RELAY_BATCH_SIZE=9"])
    assert args.only == "steady" and args.set == ["RELAY_BATCH_SIZE=9"]


def test_the_summary_names_both_targets_and_what_was_seen():
    latency = {"count": 10, "mean": 3.0, "p50": 2.0, "p95": 9.0, "p99": 12.0, "max": 15.0}
    text = relay_summary(
        {
            "relay": {"mode": "process", "settings": {"batch_size": 500, "retention": "P7D"}},
            "drain": {
                "rows": 1000,
                "elapsed_s": 0.05,
                "events_per_s": 20000.0,
                "meets_target": True,
                "failed": 0,
                "kafka": {
                    "arrived": 1000,
                    "expected": 1000,
                    "duplicates": 0,
                    "order_violations": 0,
                },
            },
            "steady": {
                "emitted": 10,
                "achieved_rate": 1000.0,
                "rate": 1000.0,
                "duration": 0.01,
                "writers": 4,
                "seen": 10,
                "meets_target": True,
                "commit_to_ack_ms": latency,
                "commit_to_mark_ms": latency,
                "commit_ms": {"count": 0},
            },
        }
    )
    assert "20,000 events/s (meets the 10,000/s target)" in text
    assert "p99 meets the 20 ms target" in text
    assert "batch_size=500" in text and "retention" not in text
    assert "(no samples)" in text


def test_the_steady_phase_leaves_out_more_seconds_only_when_it_meets_a_cold_broker_first() -> None:
    from saga_harness.bench.relay import default_steady_warmup

    assert default_steady_warmup(stack_was_running=False, phases=("steady",)) == 15.0
    assert default_steady_warmup(stack_was_running=True, phases=("steady",)) == 2.0
    assert default_steady_warmup(stack_was_running=False, phases=("drain", "steady")) == 2.0


def test_backlog_rows_number_each_aggregates_events_in_the_order_written() -> None:
    import random

    from saga_harness.bench.relay_phase import backlog_row

    rng, positions, written = random.Random(1), [0, 0, 0], {}
    rows = [backlog_row("t", rng, positions, written) for _ in range(30)]
    assert sum(positions) == 30 and len(written) == 30
    for aggregate in {a for a, _ in written.values()}:
        mine = [n for (a, n) in (written[str(row[0])] for row in rows) if a == aggregate]
        assert mine == list(range(len(mine))), "each aggregate's positions 0, 1, 2, ... in order"
    assert all(row[4] == "t" for row in rows)
