"""The product's wheel carries the product alone; the development harness is a wheel of its own.

The package lists are setuptools' own (the build backend's reading of each pyproject.toml),
so this needs no build and no network. What a production install (``pip install .``, the
Dockerfile's default target) gets is exactly the product's list.
"""

from __future__ import annotations

import importlib
import re
import tomllib
import warnings
from pathlib import Path

import pytest

from saga_system import SYSTEM

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "harness"
# The runtime, the contracts, the definition, the relay, the migrations, the operator's tool,
# and one package per service of the definition.
PRODUCT_PACKAGES = {
    "saga_runtime",
    "contracts",
    "saga_system",
    "outbox_relay",
    "migrations",
    "sagactl",
    *SYSTEM.names,
}
HARNESS_PACKAGES = {"saga_harness", "simulators"}
# What only the harness may contain: local provisioning with Debian's packages and Maven.
PROVISIONING = re.compile(r"apt-get|apt_install|maven|\bmvn\b", re.IGNORECASE)


def wheel_packages(project: Path) -> set[str]:
    """The packages setuptools puts into ``project``'s wheel."""
    from setuptools.config.pyprojecttoml import read_configuration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "[tool.setuptools] is still beta" on older versions
        config = read_configuration(project / "pyproject.toml", expand=True)
    return set(config["tool"]["setuptools"]["packages"])


@pytest.fixture(scope="module")
def product() -> set[str]:
    return wheel_packages(REPO)


@pytest.fixture(scope="module")
def harness() -> set[str]:
    return wheel_packages(HARNESS)


def top_level(packages: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in packages}


def test_the_product_wheel_holds_every_product_package_and_no_harness(product: set[str]) -> None:
    assert top_level(product) == PRODUCT_PACKAGES
    assert {"sagactl.ops", "sagactl.ops.commands", "migrations.versions"} <= product


def test_the_harness_wheel_holds_the_harness_and_the_simulators(harness: set[str]) -> None:
    assert top_level(harness) == HARNESS_PACKAGES
    assert {
        "saga_harness.infra",
        "saga_harness.bench",
        "saga_harness.chaos",
        "simulators.payment_provider",
        "simulators.smtp_sink",
    } <= harness


def test_every_package_in_the_checkout_ships_in_exactly_one_wheel(
    product: set[str], harness: set[str]
) -> None:
    """A new top-level package must be given to one side (the pyproject's include list)."""
    roots = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    roots |= {p.parent.name for p in HARNESS.glob("*/__init__.py")}
    assert roots == top_level(product) | top_level(harness)
    assert not product & harness


def test_no_product_module_provisions_anything(product: set[str]) -> None:
    for package in product:
        for module in (REPO / package.replace(".", "/")).glob("*.py"):
            text = module.read_text()
            assert not PROVISIONING.search(text), f"{module.relative_to(REPO)} provisions"


def test_the_harness_is_the_product_s_optional_extra_and_adds_its_commands() -> None:
    product = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    harness = tomllib.loads((HARNESS / "pyproject.toml").read_text())["project"]
    assert product["optional-dependencies"]["harness"] == [harness["name"]]
    assert harness["name"] not in product["dependencies"]
    commands = harness["entry-points"]["sagactl.commands"]
    assert commands == {"harness": "saga_harness.commands:register"}
    module, _, name = commands["harness"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))
