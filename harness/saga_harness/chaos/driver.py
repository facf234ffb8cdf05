"""Drives a mix of orders over REST while faults happen, retrying with Idempotency-Keys."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
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


# Placements in flight at once: enough to offer 100 orders/s against an API that takes
# a few hundred milliseconds under load (one at a time, a rate of 100 gave 31 a second).
PLACERS = 32


@dataclass
class OrderDriver:
    """Offers orders at ``rate`` per second until stopped (open loop: each placement on
    one of ``PLACERS`` threads, on a fixed schedule whatever the API's latency); remembers
    every accepted one."""

    system: System
    rng: random.Random
    rate: float
    accepted: dict[str, str] = field(default_factory=dict)  # order id -> kind
    refused: Counter[str] = field(default_factory=Counter)
    offered: int = 0  # placements started
    seconds: float = 0.0  # how long it offered orders
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        kinds = list(WEIGHTS)
        weights = [WEIGHTS[k] for k in kinds]
        limits = httpx.Limits(max_connections=PLACERS, max_keepalive_connections=PLACERS)
        started = time.monotonic()
        with (
            httpx.Client(timeout=5, limits=limits) as client,
            ThreadPoolExecutor(PLACERS, thread_name_prefix="chaos-place") as placers,
        ):
            due = started
            while not self._stop.is_set():
                # Drawn here, in order: the seed fixes the sequence of kinds and delays.
                kind = self.rng.choices(kinds, weights)[0]
                cancel_after = self.rng.uniform(0.0, 3.0)
                placers.submit(self._place, client, kind, cancel_after)
                self.offered += 1
                due += 1.0 / self.rate
                self._stop.wait(max(0.0, due - time.monotonic()))
            self.seconds = time.monotonic() - started
            # Placements not started yet never reached the API: dropped, not counted.
            placers.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        self._stop.set()

    @property
    def accepted_per_second(self) -> float:
        return round(len(self.accepted) / self.seconds, 1) if self.seconds else 0.0

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
                with self._lock:
                    self.accepted[order_id] = kind
                if cancel:
                    threading.Timer(
                        cancel_after, self._cancel, args=(order_id, body["customer_id"])
                    ).start()
                return
            if response.status_code < 500:
                with self._lock:
                    self.refused[f"{kind}:{response.status_code}"] += 1
                return
            time.sleep(0.5)
        with self._lock:
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
