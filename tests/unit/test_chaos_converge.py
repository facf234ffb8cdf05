"""The chaos harness keeps auditing while a process the last fault took down comes back."""

from __future__ import annotations

import json

import httpx
import pytest
from confluent_kafka import KafkaException

from saga_harness.chaos import harness
from sagactl.invariants import Violation
from sagactl.ops.ledger import LedgerUnavailable


class _System:
    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.audits = 0

    def audit(self) -> list[Violation]:
        self.audits += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.time, "sleep", lambda _s: None)


@pytest.mark.parametrize(
    "outage",
    [
        LedgerUnavailable("http://provider/ledger: [Errno 111] Connection refused"),
        httpx.ConnectError("Connection refused"),
    ],
)
def test_an_unreachable_process_during_the_audit_is_waited_for(outage: Exception) -> None:
    system = _System(outage, outage, [])

    assert harness._converge(system, timeout=60) == []  # type: ignore[arg-type]
    assert system.audits == 3


def test_an_outage_that_outlasts_the_deadline_is_reported_as_a_violation() -> None:
    system = _System(LedgerUnavailable("provider down"))

    violations = harness._converge(system, timeout=0)  # type: ignore[arg-type]

    assert [v.rule for v in violations] == ["audit"]
    assert "could not audit yet" in str(violations[0])


def test_the_report_counts_the_orders_the_pending_deadline_cancelled_by_kind() -> None:
    report = harness.ChaosReport(seed=1, seconds_to_converge=3.0, timed_out={"happy": 2})
    assert report.passed, "a deadline cancellation is liveness, not a violation"
    assert "cancelled by the pending deadline: 2 {'happy': 2}" in report.summary()


def test_the_report_says_where_the_orders_the_deadline_cancelled_stood() -> None:
    report = harness.ChaosReport(
        seed=1,
        seconds_to_converge=3.0,
        timed_out={"happy": 3},
        timed_out_log=[
            "   41.3s happy after StockReserved",
            "  102.0s happy after StockReserved",
            "  140.5s happy after OrderCreated",
        ],
    )

    summary = report.summary()

    assert "    happy after StockReserved: 2" in summary
    assert "    happy after OrderCreated: 1" in summary
    assert json.loads(report.to_json())["timed_out_log"][0] == "   41.3s happy after StockReserved"


def test_a_clean_audit_still_waits_for_every_service_to_read_its_topics_to_the_end() -> None:
    """Sagas can all be settled while a service has a replayed topic (and its poison) still to
    read: counting dead letters then would race the service."""
    system = _System([], [], [])
    lags: list[object] = [KafkaException("broker restarting"), 120, 0]

    def lag() -> int:
        answer = lags.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    assert harness._converge(system, timeout=60, lag=lag) == []  # type: ignore[arg-type]
    assert system.audits == 3


def test_a_service_that_never_catches_up_is_a_violation_at_the_deadline() -> None:
    system = _System([])

    violations = harness._converge(system, timeout=0, lag=lambda: 7)  # type: ignore[arg-type]

    assert [str(v) for v in violations] == ["lag: 7 messages not consumed yet"]
