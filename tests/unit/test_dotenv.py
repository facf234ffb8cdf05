"""The checkout's .env: generated secrets, kept once made, never committed; and ``up`` refuses
to start the system without them."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from saga_harness.commands import missing_secrets, token_hint
from saga_harness.dotenv import SECRETS, ensure_env_file, read_env_file

REPO = Path(__file__).resolve().parents[2]


def test_a_new_env_file_has_every_secret_generated_and_owner_only(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    values = ensure_env_file(path)
    assert set(values) == set(SECRETS)
    assert read_env_file(path) == values
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(values["AUTH_JWT_SECRET"]) >= 32
    assert values["PAYMENTS_PROVIDER_API_KEY"] == values["PROVIDER_API_KEY"]
    assert (
        len({values[n] for n in ("AUTH_JWT_SECRET", "PROVIDER_API_KEY", "POSTGRES_PASSWORD")}) == 3
    )
    assert ensure_env_file(tmp_path / "other.env") != values, "each checkout its own secrets"


def test_existing_values_are_kept_and_only_missing_ones_added(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# mine\nAUTH_JWT_SECRET=chosen-by-me\nPROVIDER_API_KEY=pk\nOTHER=1\n")
    values = ensure_env_file(path)
    assert values["AUTH_JWT_SECRET"] == "chosen-by-me"
    assert values["PAYMENTS_PROVIDER_API_KEY"] == "pk", "the same key as the provider's"
    assert values["OTHER"] == "1"
    text = path.read_text()
    assert text.startswith("# mine\nAUTH_JWT_SECRET=chosen-by-me\n")
    before = text
    assert ensure_env_file(path) == values
    assert path.read_text() == before, "nothing rewritten once complete"


def test_git_never_tracks_the_env_file() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False, capture_output=True
    )
    assert ignored.returncode == 0, ".env must be in .gitignore"


def test_up_refuses_to_start_without_the_secrets() -> None:
    assert missing_secrets({}) == [
        "AUTH_JWT_SECRET (or AUTH_JWKS_FILE)",
        "PROVIDER_API_KEY",
        "PAYMENTS_PROVIDER_API_KEY",
    ]
    complete = {"AUTH_JWKS_FILE": "/keys.json", "PROVIDER_API_KEY": "k"}
    assert missing_secrets({**complete, "PAYMENTS_PROVIDER_API_KEY": "k"}) == []


def test_up_says_how_to_get_a_token() -> None:
    hint = token_hint(8000)
    assert "./dev token --customer c-42" in hint and "--operator" in hint
    assert 'Authorization: Bearer $TOKEN" http://127.0.0.1:8000/orders' in hint


def test_local_processes_listen_on_loopback_only_by_default() -> None:
    """What ./dev up starts is reachable from this host alone unless told otherwise."""
    from orders.settings import OrdersSettings
    from outbox_relay.settings import RelayProcessSettings
    from saga_harness.infra.kafka import KAFKA_HOST
    from saga_harness.infra.postgres import _SERVER_CONF
    from saga_runtime import ServiceSettings
    from simulators.payment_provider.settings import ProviderSettings
    from simulators.smtp_sink.server import SinkSettings
    from stock.settings import StockSettings

    for settings in (OrdersSettings, StockSettings, ProviderSettings, SinkSettings):
        assert settings.model_fields["host"].default == "127.0.0.1", settings
    for settings in (ServiceSettings, RelayProcessSettings):
        assert settings.model_fields["health_host"].default == "127.0.0.1", settings
    assert KAFKA_HOST == "127.0.0.1"
    assert "listen_addresses = '127.0.0.1'" in _SERVER_CONF
