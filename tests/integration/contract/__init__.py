"""The handler contract's part of each service (see ``scenario`` and ``test_handler_contract``)."""

from __future__ import annotations

from tests.integration.contract import notifications, orders, payments, shipments, stock
from tests.integration.contract.scenario import Contract

CONTRACTS: dict[str, Contract] = {
    part.CONTRACT.service: part.CONTRACT
    for part in (orders, stock, payments, shipments, notifications)
}

__all__ = ["CONTRACTS", "Contract"]
