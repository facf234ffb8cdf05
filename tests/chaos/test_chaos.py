"""A short chaos run on the real stack: every fault kind, then the auditor must find nothing.

The seed comes from SAGA_CHAOS_SEED when set (to reproduce a failure), else
it is random and printed. Longer runs: `sagactl chaos --duration 1800`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from saga_harness.chaos import ChaosConfig, run_chaos

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]


def test_nothing_is_lost_charged_twice_or_left_stuck(local_stack, tmp_path: Path) -> None:
    seed = int(os.environ.get("SAGA_CHAOS_SEED") or random.randrange(1_000_000))
    config = ChaosConfig(
        seed=seed,
        duration=float(os.environ.get("SAGA_CHAOS_DURATION", "90")),
        fault_every=6.0,
        order_rate=3.0,
    )
    report = run_chaos(config, stack=local_stack, log_dir=tmp_path / "chaos")
    print(report.summary())
    (tmp_path / "chaos" / "report.json").write_text(report.to_json())
    assert report.passed, report.summary()
    assert sum(report.faults.values()) >= 5, "the run must actually inject faults"
    assert sum(report.orders.values()) >= 50
