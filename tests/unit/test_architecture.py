"""The architecture's import rules (``tests/architecture.py``) hold: ``lint-imports`` passes.

The rules are generated from the system definition, so every service it declares is held
to them: services never import each other, the runtime knows no domain, the product never
imports the harness.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

from saga_system import SYSTEM
from tests.architecture import import_rules

REPO = Path(__file__).resolve().parents[2]


def lint_imports(
    config: str, tmp_path: Path, *extra_paths: Path
) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.exists(), f"{lint} is missing: install the dev extra (./dev does)"
    path = tmp_path / "importlinter.ini"
    path.write_text(config)
    # This checkout's packages, whichever checkout the venv's editable install points at.
    paths = [REPO, REPO / "harness", *extra_paths]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    return subprocess.run(
        [str(lint), "--config", str(path), "--no-cache", "--no-logo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lint_imports_passes(tmp_path: Path) -> None:
    result = lint_imports(import_rules(), tmp_path)
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


def test_the_rules_hold_every_service_of_the_definition() -> None:
    config = configparser.ConfigParser()
    config.read_string(import_rules())

    def listed(contract: str, key: str) -> list[str]:
        value = config[f"importlinter:contract:{contract}"][key]
        return [line.strip() for line in value.splitlines() if line.strip()]

    assert listed("services-independent", "modules") == SYSTEM.names
    layers = listed("layers", "layers")
    assert layers == ["saga_system", " | ".join(SYSTEM.names), "contracts", "saga_runtime"]
    assert set(SYSTEM.names) <= set(listed("product-without-harness", "source_modules"))
    assert set(SYSTEM.names) <= set(config["importlinter"]["root_packages"].split())


def test_a_new_service_that_imports_another_breaks_the_rules(tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    (packages / "loyalty").mkdir(parents=True)
    (packages / "loyalty" / "__init__.py").write_text("import orders.domain\n")
    result = lint_imports(import_rules([*SYSTEM.names, "loyalty"]), tmp_path, packages)
    assert result.returncode != 0, result.stdout
    assert "loyalty -> orders" in result.stdout.replace(".domain", ""), result.stdout
