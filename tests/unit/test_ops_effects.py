"""``sagactl effects``: statuses as the table holds them, the cells people read, the SQL a
selection makes, and the refusals that come before any connection."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from sagactl.cli import main
from sagactl.ops.commands.effects_inspect import next_step, parse_statuses, row_cells
from sagactl.ops.effects import KNOWN_STATUSES, EffectFilter, EffectRow, StatusCounts
from sagactl.ops.effects_change import ABANDON, RETRY, ChangePlan, becomes

WHEN = datetime(2026, 11, 21, 20, 0, 13, 966000, tzinfo=UTC)
ROW = EffectRow(
    service="payments",
    id=7,
    aggregate_id="o-1",
    kind="charge",
    idempotency_key="charge-o-1",
    status="pending",
    attempts=2,
    next_attempt_at=WHEN,
    deadline_at=WHEN,
    lease_owner=None,
    lease_until=None,
    last_error="ProviderUnavailable()",
    correlation_id=None,
    created_at=WHEN,
    updated_at=WHEN,
)


def test_statuses_are_any_words_lowercased_and_folded() -> None:
    assert parse_statuses("failed") == ("failed",)
    assert parse_statuses("Pending, running,pending") == ("pending", "running")
    # A status a newer executor writes is filtered on as it is.
    assert parse_statuses("outcome_recorded") == ("outcome_recorded",)
    for bad in ("", ",", "pending;drop", "1"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a status list"):
            parse_statuses(bad)


def test_a_selection_is_parameterized_sql_and_described_for_the_audit_log() -> None:
    flt = EffectFilter(statuses=("failed",), kind="charge", order_id="o-1", ids=(3, 4))
    where, params = flt.where()
    assert where.as_string() == (
        "TRUE AND status = ANY(%s) AND kind = %s AND aggregate_id = %s AND id = ANY(%s)"
    )
    assert params == [["failed"], "charge", "o-1", [3, 4]]
    assert flt.describe() == {
        "status": ["failed"],
        "kind": "charge",
        "order_id": "o-1",
        "ids": [3, 4],
    }
    assert EffectFilter().where()[0].as_string() == "TRUE"


def test_the_next_column_says_when_it_is_due_or_who_holds_it() -> None:
    assert next_step(ROW) == "due 2026-11-21 20:00:13"
    leased = replace(ROW, status="running", lease_owner="host:12:ab", lease_until=WHEN)
    assert next_step(leased) == "leased to host:12:ab until 20:00:13"
    assert next_step(replace(ROW, status="failed")) == "-"
    assert next_step(replace(ROW, status="outcome_recorded")) == "-"
    assert row_cells(ROW) == (
        "payments",
        7,
        "charge",
        "o-1",
        "pending",
        2,
        WHEN,
        "due 2026-11-21 20:00:13",
        "ProviderUnavailable()",
    )


def test_counts_list_the_known_statuses_then_any_other_the_table_holds() -> None:
    # Names no executor uses: the test holds when the runtime adds statuses of its own.
    counts = StatusCounts("payments", {"failed": 2, "zz_new": 1, "zz_later": 3}, 1.5, 0)
    assert counts.statuses() == [*KNOWN_STATUSES, "zz_later", "zz_new"]
    assert counts.as_dict()["counts"] == {
        **dict.fromkeys(KNOWN_STATUSES, 0),
        "failed": 2,
        "zz_later": 3,
        "zz_new": 1,
    }


def test_retry_takes_failed_abandoned_and_undecided_abandon_never_running() -> None:
    assert RETRY.applies_to == ("failed", "abandoned", "undecided")
    assert RETRY.becomes == "pending"
    # An undecided effect's outcome is recorded: retrying it decides again, never calls again.
    assert becomes(RETRY, "undecided") == "recorded" and becomes(RETRY, "failed") == "pending"
    assert ABANDON.applies_to == ("pending", "failed", "undecided")
    assert ABANDON.becomes == "abandoned" and becomes(ABANDON, "undecided") == "abandoned"
    plan = ChangePlan("payments", RETRY)
    assert "lease" in plan.why_not(replace(ROW, status="running"))
    assert "decided on" in plan.why_not(replace(ROW, status="done"))
    assert "does not apply" in plan.why_not(replace(ROW, status="outcome_recorded"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["retry", "--service", "payments"], "say which effects to retry"),
        (["retry", "--service", "payments", "1", "--status", "failed"], "either ids or --status"),
        (["retry", "--service", "payments", "--kind", "charge"], "add --status"),
        (["retry", "--service", "payments", "--status", "running"], "does not apply to running"),
        (["retry", "--service", "payments", "--status", "done,failed"], "does not apply to done"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_a_change_must_name_effects_it_can_take_before_any_connection(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["effects", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "payments", "1"],  # the service is --service, as for every effects action
        ["abandon", "--service", "payments"],  # no ids
        ["abandon", "--service", "payments", "1", "--status", "failed"],  # ids only
    ],
    ids=" ".join,
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["effects", *argv])
    assert exited.value.code == 2
    assert "usage: sagactl" in capsys.readouterr().err
