"""Drives a mix of orders over REST while faults happen, retrying with Idempotency-Keys."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from saga_harness.system import System, order_request

GB = {"name": "Ada", "line1": "1 Sq", "city": "London", "postal_code": "SW1", "country": "GB"}
BR = {"name": "Ana", "line1": "Rua 1", "city": "Rio", "postal_code": "20000", "country": "BR"}

# kind -> (items, card token, address, cancel by the customer?)
MIX: dict[str, tuple[list[dict[str, Any]], str, dict[str, str], bool]] = {
    "happy": (
        [{"sku": "CABLE-C", "quantity": 1}, {"sku": "MOUSE-01", "quantity": 1}],
        "tok_visa",
        GB,
        False,
    ),
    "out_of_stock": ([{"sku": "LAMP-01", "quantity": 100}], "tok_visa", GB, False),
    "declined": ([{"sku": "CABLE-C", "quantity": 2}], "tok_decline", GB, False),
    "provider_flaky": ([{"sku": "MOUSE-01", "quantity": 1}], "tok_flaky", GB, False),
    "provider_error": ([{"sku": "CABLE-C", "quantity": 1}], "tok_error", GB, False),
    "shipment_failure": ([{"sku": "CABLE-C", "quantity": 1}], "tok_visa", BR, False),
    "customer_cancel": ([{"sku": "KEYB-01", "quantity": 1}], "tok_visa", GB, True),
}
WEIGHTS = {
    "happy": 8,
    "out_of_stock": 1,
    "declined": 2,
    "provider_flaky": 1,
    "provider_error": 1,
    "shipment_failure": 2,
    "customer_cancel": 3,
}


@dataclass
class OrderDriver:
    """Places orders at ``rate`` per second until stopped; remembers every accepted one."""

    system: System
    rng: random.Random
    rate: float
    accepted: dict[str, str] = field(default_factory=dict)  # order id -> kind
    refused: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        kinds = list(WEIGHTS)
        weights = [WEIGHTS[k] for k in kinds]
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                kind = self.rng.choices(kinds, weights)[0]
                cancel_after = self.rng.uniform(0.0, 3.0)
                self._place(client, kind, cancel_after)
                self._stop.wait(1.0 / self.rate)

    def stop(self) -> None:
        self._stop.set()

    def _place(self, client: httpx.Client, kind: str, cancel_after: float) -> None:
        items, token, address, cancel = MIX[kind]
        body = order_request(
            customer_id=f"chaos-{kind}",
            items=items,
            payment={"card_token": token},
            shipping_address=address,
        )
        key = str(uuid.uuid4())
        headers = {"Idempotency-Key": key, **self.system.tokens.customer(body["customer_id"])}
        for _ in range(20):  # the orders service may be down right now: same key, same order
            try:
                response = client.post(
                    f"{self.system.orders_url}/orders", json=body, headers=headers
                )
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if response.status_code == 202:
                order_id = response.json()["order_id"]
                self.accepted[order_id] = kind
                if cancel:
                    threading.Timer(
                        cancel_after, self._cancel, args=(order_id, body["customer_id"])
                    ).start()
                return
            if response.status_code < 500:
                self.refused[f"{kind}:{response.status_code}"] += 1
                return
            time.sleep(0.5)
        self.refused[f"{kind}:unreachable"] += 1

    def _cancel(self, order_id: str, customer_id: str) -> None:
        for _ in range(10):
            try:
                response = httpx.post(
                    f"{self.system.orders_url}/orders/{order_id}/cancel",
                    headers=self.system.tokens.customer(customer_id),
                    timeout=5,
                )
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if response.status_code < 500:  # 202, or 409 when it already shipped
                return
            time.sleep(0.5)
