"""Where run_service finds a service's Settings and compose."""

from __future__ import annotations

import pytest

from orders import bootstrap as orders_bootstrap
from saga_runtime import composition_root
from saga_system import SYSTEM
from tests.toy.definition import SYSTEM_WITH_LOYALTY
from tests.toy.loyalty import bootstrap as loyalty_bootstrap


def test_a_top_level_service_package_is_found_by_its_name() -> None:
    root = composition_root(SYSTEM, "orders")
    assert root.Settings is orders_bootstrap.Settings
    assert root.compose is orders_bootstrap.compose


def test_a_service_may_name_its_composition_root_in_the_definition() -> None:
    root = composition_root(SYSTEM_WITH_LOYALTY, "loyalty")
    assert root.Settings is loyalty_bootstrap.Settings
    composition = root.compose(root.Settings(points_per_order=3))
    assert composition.dependencies == {"points_per_order": 3}


def test_an_unknown_service_is_refused_with_the_known_ones() -> None:
    with pytest.raises(KeyError, match="orders, stock"):
        composition_root(SYSTEM, "loyalty")
