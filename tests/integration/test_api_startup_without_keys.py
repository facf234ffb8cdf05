"""A process with an API never starts open: without its keys it exits at once, saying which
setting it needs, and serves nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from saga_harness.checkout import PYTHONPATH, REPO
from saga_harness.system import free_port

pytestmark = pytest.mark.integration

NEEDS = {
    ("run", "orders"): "AUTH_JWT_SECRET",
    ("run", "stock"): "AUTH_JWT_SECRET",
    ("provider",): "PROVIDER_API_KEY",
}


def test_without_keys_no_api_starts(migrated_database_url: str, infra: Any) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AUTH_") and k not in ("PROVIDER_API_KEY", "PAYMENTS_PROVIDER_API_KEY")
    }
    env |= {
        "PYTHONPATH": PYTHONPATH,
        "DATABASE_URL": migrated_database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "ORDERS_PORT": str(free_port()),
        "STOCK_PORT": str(free_port()),
        "PROVIDER_PORT": str(free_port()),
    }
    # All three at once: each is a Python start-up, a few seconds on a busy machine.
    started = {
        argv: subprocess.Popen(
            [sys.executable, "-m", "sagactl", *argv],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in NEEDS
    }
    for argv, process in started.items():
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 2, (argv, stderr)
        assert NEEDS[argv] in stderr, (argv, stderr)
        assert "Traceback" not in stderr, (argv, stderr)
