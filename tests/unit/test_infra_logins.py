"""How the test infrastructure logs in to the broker: env mode takes the environment's SASL
login as the super user's; a plain broker has none; the login never shows."""

from __future__ import annotations

import pytest

from tests.fixtures.infra import _env_addresses


def test_env_mode_logs_in_as_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker.example:9093")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example:5432/saga")
    for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD"):
        monkeypatch.delenv(f"KAFKA_{name}", raising=False)
    assert _env_addresses().kafka_super_user is None, "plain: nobody to log in as"

    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "ops")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret-value")
    addresses = _env_addresses()
    assert addresses.kafka_super_user == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "ops",
        "sasl.password": "s3cret-value",
    }
    assert "s3cret-value" not in repr(addresses)
