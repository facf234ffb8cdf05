"""The chaos harness keeps auditing while a process the last fault took down comes back."""

from __future__ import annotations

import httpx
import pytest

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
