"""The architecture's import rules (.importlinter) hold: ``lint-imports`` passes.

Services never import each other; saga_system sits above the services, which sit above
contracts, which sit above saga_runtime; the runtime knows no domain; the product never
imports the development harness; the operator's tool reaches services through the
definition; the simulators know nothing of the saga.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

from saga_system import SYSTEM

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"


def contract(name: str) -> configparser.SectionProxy:
    config = configparser.ConfigParser()
    config.read(CONFIG)
    return config[f"importlinter:contract:{name}"]


def listed(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def test_lint_imports_passes() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"{lint_imports} is missing: install the dev extra (./dev does)"
    # This checkout's packages, whichever checkout the venv's editable install points at.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "harness")])}
    result = subprocess.run(
        [str(lint_imports), "--config", str(CONFIG), "--no-cache", "--no-logo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


def test_the_contracts_name_every_service_of_the_definition() -> None:
    """The independence and layers contracts list the services; a service the definition
    gains must be added there too, or no contract would keep it apart from the others."""
    services = sorted(SYSTEM.names)
    assert sorted(listed(contract("services-independent")["modules"])) == services
    layers = listed(contract("layers")["layers"])
    assert sorted(name.strip() for name in layers[1].split("|")) == services
    assert layers[0] == "saga_system" and layers[2:] == ["contracts", "saga_runtime"]
    product = set(listed(contract("product-without-harness")["source_modules"]))
    assert set(services) <= product
