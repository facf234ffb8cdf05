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


@pytest.mark.parametrize(
    ("argv", "setting"),
    [
        (["run", "orders"], "AUTH_JWT_SECRET"),
        (["run", "stock"], "AUTH_JWT_SECRET"),
        (["provider"], "PROVIDER_API_KEY"),
    ],
    ids=["orders", "stock", "provider"],
)
def test_without_keys_the_api_refuses_to_start(
    migrated_database_url: str, infra: Any, argv: list[str], setting: str
) -> None:
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
    result = subprocess.run(
        [sys.executable, "-m", "sagactl", *argv],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert setting in result.stderr
    assert "Traceback" not in result.stderr
