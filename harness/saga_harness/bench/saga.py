"""The saga benchmark: drive orders over REST, time every saga and every hop of it."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from saga_harness.bench.backlog import BacklogSampler, growth
from saga_harness.bench.cpu import Target
from saga_harness.bench.cpu_split import BackendNames
from saga_harness.bench.cpu_window import CpuWindow
from saga_harness.bench.load import (
    Authorize,
    Completions,
    LoadResult,
    anonymous,
    closed_loop,
    open_loop,
)
from saga_harness.bench.observer import Observed, SagaObserver
from saga_harness.bench.stats import summarize
from saga_runtime import KafkaSettings, events_topic
from saga_system import SYSTEM

__all__ = ["BENCH_SKUS", "SagaBenchConfig", "analyse", "order_body", "run_saga_bench"]

SERVICES = tuple(SYSTEM.names)
BENCH_SKUS = tuple(f"BENCH-{n:03d}" for n in range(200))

# The happy path, and who turns each event into the next.
CHAIN = (
    ("OrderCreated", "orders API"),
    ("StockReserved", "stock"),
    ("PaymentSucceeded", "payments"),
    ("OrderApproved", "orders"),
    ("ShipmentScheduled", "shipments"),
    ("OrderShipped", "orders"),
)


@dataclass(frozen=True)
class SagaBenchConfig:
    mode: str = "open"  # "open": fixed rate; "closed": fixed number of clients
    rate: float = 100.0  # orders per second (open loop)
    clients: int = 32  # concurrent clients (closed loop)
    duration: float = 60.0  # seconds of load
    warmup: float = 5.0  # seconds excluded from the figures at the start
    drain_timeout: float = 60.0  # how long to wait for the last sagas to finish
    seed: int = 1


def order_body(rng: random.Random) -> dict[str, Any]:
    """An order that should ship: a card that pays, stock that is there, a served country."""
    skus = rng.sample(BENCH_SKUS, k=rng.randint(1, 3))
    return {
        "customer_id": f"bench-{rng.randrange(10_000)}",
        "email": "bench@example.com",
        "items": [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in skus],
        "payment": {"card_token": "tok_visa"},
        "shipping_address": {
            "name": "Bench Customer",
            "line1": "1 Load Street",
            "city": "London",
            "postal_code": "EC1A 1BB",
            "country": "GB",
        },
    }


def run_saga_bench(
    config: SagaBenchConfig,
    *,
    orders_url: str,
    database_url: str,
    kafka: KafkaSettings,
    cpu_targets: Mapping[str, Target] | None = None,
    harness_labels: Collection[str] = (),
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    authorize: Authorize = anonymous,
) -> dict[str, Any]:
    """Drive the system, wait for the sagas to finish, and return every figure (JSON-able).

    ``authorize(body)`` gives each order's request headers (its customer's token).

    ``cpu_targets`` are the processes whose CPU over the measured window is reported
    (``cpu``); the bench client itself (this process) is always one of them, and one
    of ``harness_labels``, the labels reported as the harness's rather than the
    system's. A ``postgres`` target is split by backend (``cpu_split``).
    """
    completions = Completions()
    observer = SagaObserver(
        kafka=kafka,
        topics=[events_topic(s, kafka.topic_prefix) for s in SERVICES],
        on_final=completions.record,
    )
    observer.start()
    load = LoadResult()
    sampler = BacklogSampler(
        database_url=database_url,
        kafka=kafka,
        in_flight=lambda: sum(1 for o in list(load.submitted) if o not in completions.done),
    )

    def report(current: LoadResult) -> None:
        nonlocal load
        load = current
        elapsed = time.time() - current.started
        done = sum(1 for o in list(current.submitted) if o in completions.done)
        last = sampler.samples[-1] if sampler.samples else None
        progress(
            f"  {elapsed:5.0f}s  submitted {len(current.submitted):7d}  completed {done:7d}"
            f"  ({done / max(elapsed, 1e-9):6.1f}/s)"
            + (
                f"  in flight {last.in_flight:6d}  outbox {last.outbox_pending:6d}"
                f"  consumer lag {last.consumer_lag:6d}"
                if last
                else ""
            )
        )

    # Timed from here rather than from load.started (set inside the loop): the two
    # differ by the event loop's start-up, milliseconds.
    cpu = CpuWindow(
        {**(cpu_targets or {}), "bench client": Target(os.getpid())},
        backend_names=BackendNames(database_url),
        harness={"bench client", *harness_labels},
    )
    begun = time.time()
    cpu.start(start_at=begun + config.warmup, end_at=begun + config.duration)
    sampler.start()
    url = f"{orders_url.rstrip('/')}/orders"
    try:
        if config.mode == "open":
            load = asyncio.run(
                open_loop(
                    url,
                    order_body,
                    rate=config.rate,
                    duration=config.duration,
                    seed=config.seed,
                    progress=report,
                    authorize=authorize,
                )
            )
        else:
            load = asyncio.run(
                closed_loop(
                    url,
                    order_body,
                    completions,
                    clients=config.clients,
                    duration=config.duration,
                    seed=config.seed,
                    progress=report,
                    authorize=authorize,
                )
            )
        deadline = time.time() + config.drain_timeout
        while time.time() < deadline and any(o not in completions.done for o in load.submitted):
            time.sleep(0.5)
        drained_at = time.time()
        time.sleep(1.5)  # the backlog sampler sees the drained state
    finally:
        cpu.stop()
        sampler.stop()
        observer.stop()
    result = analyse(config, load, completions, observer, drained_at)
    result["backlog"] = _backlog(sampler, load, config)
    result["cpu"] = cpu.figures(
        [at for _status, at in completions.done.values()],
        cores=os.cpu_count(),
        load_started=load.started,
    )
    return result


def analyse(
    config: SagaBenchConfig,
    load: LoadResult,
    completions: Completions,
    observer: SagaObserver,
    drained_at: float,
) -> dict[str, Any]:
    window_start = load.started + config.warmup
    window_end = load.finished if config.mode == "open" else load.started + config.duration
    measured = {o: t for o, t in load.submitted.items() if t >= window_start}
    finished = {o: completions.done[o] for o in measured if o in completions.done}
    e2e = [at - measured[o] for o, (_status, at) in finished.items()]
    completed_in_window = sum(
        1 for _o, (_s, at) in completions.done.items() if window_start <= at <= window_end
    )
    statuses: dict[str, int] = {}
    for status, _at in finished.values():
        statuses[status] = statuses.get(status, 0) + 1
    hops, relay = _hops(measured, observer)
    seconds = max(window_end - window_start, 1e-9)
    return {
        "config": asdict(config),
        "submitted": len(load.submitted),
        "rejected": load.rejected,
        "offered_rate": round(len(measured) / seconds, 1),
        "completed_per_second": round(completed_in_window / seconds, 1),
        "measured_sagas": len(measured),
        "finished": statuses,
        "unfinished": len(measured) - len(finished),
        "seconds_to_drain_after_load": round(max(0.0, drained_at - load.finished), 1),
        "client_max_send_delay_ms": round(load.max_send_delay * 1000, 1),
        "end_to_end_ms": summarize(e2e),
        "relay_ms": summarize(relay),
        "hops_ms": hops,
    }


def _hops(
    submitted: dict[str, float], observer: SagaObserver
) -> tuple[dict[str, dict[str, float | int]], list[float]]:
    """Split each happy-path saga into what each service and the relay took."""
    samples: dict[str, list[float]] = {}
    relay: list[float] = []

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    for order_id, started in submitted.items():
        first: dict[str, Observed] = {}
        for seen in observer.timeline(order_id):
            first.setdefault(seen.event_type, seen)
            relay.append(seen.appended - seen.occurred_at)
        if not all(event in first for event, _ in CHAIN):
            continue
        previous_ack = started
        for event, service in CHAIN:
            seen = first[event]
            cause = "submit" if service == "orders API" else "previous event"
            add(f"{service}: {cause} -> {event} written", seen.occurred_at - previous_ack)
            add(f"relay: {event} written -> broker ack", seen.appended - seen.occurred_at)
            previous_ack = seen.appended
    return {name: summarize(values) for name, values in samples.items()}, relay


def _backlog(sampler: BacklogSampler, load: LoadResult, config: SagaBenchConfig) -> dict[str, Any]:
    start, end = load.started + config.warmup, load.finished or load.started + config.duration
    slope = growth(sampler.samples, "in_flight", start, end)
    during = [s for s in sampler.samples if start <= s.at <= end]
    rate = len(load.submitted) / max(end - load.started, 1e-9)
    return {
        # Sagas in flight growing by more than one second's worth of orders over the
        # load means the system does not keep up with the offered rate.
        "grew": slope * (end - start) > max(rate, 1.0),
        "in_flight_growth_per_s": round(slope, 2),
        "consumer_lag_growth_per_s": round(growth(sampler.samples, "consumer_lag", start, end), 2),
        "outbox_pending_growth_per_s": round(
            growth(sampler.samples, "outbox_pending", start, end), 2
        ),
        "max_in_flight": max((s.in_flight for s in during), default=0),
        "max_outbox_pending": max((s.outbox_pending for s in during), default=0),
        "max_consumer_lag": max((s.consumer_lag for s in during), default=0),
        "samples": [
            [round(s.at - load.started, 1), s.in_flight, s.outbox_pending, s.consumer_lag]
            for s in sampler.samples
        ],
    }
