"""./dev up gives each process only its own secrets of .env, as compose gives each container."""

from __future__ import annotations

from saga_harness.commands import own_secrets, withheld_from_children
from saga_harness.dotenv import SECRETS
from saga_runtime import relay_login
from saga_system import SYSTEM

EVERY_SECRET = {name: f"value-of-{name}" for name in SECRETS}


def test_no_child_inherits_any_secret_of_the_env_file_nor_a_kafka_login() -> None:
    withheld = withheld_from_children()
    assert set(SECRETS) <= withheld
    assert "KAFKA_SASL_PASSWORD" in withheld


def test_each_service_gets_its_own_database_password_and_only_the_secrets_its_api_needs() -> None:
    got = {s: set(own_secrets(s, [s], EVERY_SECRET)) for s in SYSTEM.names}

    assert got == {
        "orders": {"DATABASE_PASSWORD_ORDERS", "AUTH_JWT_SECRET"},
        "stock": {"DATABASE_PASSWORD_STOCK", "AUTH_JWT_SECRET"},
        "payments": {"DATABASE_PASSWORD_PAYMENTS", "PAYMENTS_PROVIDER_API_KEY"},
        "shipments": {"DATABASE_PASSWORD_SHIPMENTS"},
        "notifications": {"DATABASE_PASSWORD_NOTIFICATIONS"},
    }


def test_a_relay_gets_its_outboxes_relay_passwords_and_the_provider_its_key() -> None:
    relay = own_secrets("relay-0", [relay_login(o) for o in SYSTEM.outboxes()], EVERY_SECRET)

    assert set(relay) == {f"DATABASE_PASSWORD_{o.upper()}_RELAY" for o in SYSTEM.outboxes()}
    assert own_secrets("provider", (), EVERY_SECRET) == {
        "PROVIDER_API_KEY": "value-of-PROVIDER_API_KEY"
    }
    assert own_secrets("smtp-sink", (), EVERY_SECRET) == {}
