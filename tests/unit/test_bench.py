"""The benchmark's arithmetic: percentiles, backlog trend, and how a saga splits into hops."""

from __future__ import annotations

import asyncio

import pytest

from saga_harness.bench.backlog import Sample, growth
from saga_harness.bench.load import Completions, LoadResult
from saga_harness.bench.observer import Observed, SagaObserver
from saga_harness.bench.saga import CHAIN, SagaBenchConfig, analyse
from saga_harness.bench.stats import percentile, summarize
from saga_runtime import KafkaSettings


def test_nearest_rank_percentiles() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summaries_are_in_milliseconds_and_empty_is_explicit() -> None:
    s = summarize([0.010, 0.020, 0.030, 0.040])
    assert (s["count"], s["p50"], s["max"], s["mean"]) == (4, 20.0, 40.0, 25.0)
    assert summarize([]) == {"count": 0}


def test_growth_is_the_least_squares_slope_within_the_window() -> None:
    flat = [Sample(at=t, in_flight=50, outbox_pending=0, consumer_lag=0) for t in range(10)]
    rising = [Sample(at=t, in_flight=10 * t, outbox_pending=0, consumer_lag=0) for t in range(10)]
    assert growth(flat, "in_flight", 0, 10) == 0
    assert growth(rising, "in_flight", 0, 10) == pytest.approx(10)
    assert growth(rising, "in_flight", 20, 30) == 0, "no samples in the window"


def test_completions_wake_a_waiting_client_once_even_if_the_final_event_repeats() -> None:
    completions = Completions()

    async def scenario() -> None:
        waiter = asyncio.create_task(completions.wait("o-1"))
        await asyncio.sleep(0)
        completions.record("o-1", "SHIPPED", 12.0)
        completions.record("o-1", "SHIPPED", 13.0)  # redelivered: the first one counts
        await asyncio.wait_for(waiter, 1)
        await asyncio.wait_for(completions.wait("o-1"), 1)  # already done: returns at once

    asyncio.run(scenario())
    assert completions.done == {"o-1": ("SHIPPED", 12.0)}


def _observer_with(timelines: dict[str, list[Observed]]) -> SagaObserver:
    observer = SagaObserver(kafka=KafkaSettings(bootstrap_servers="unused:1"), topics=[])
    observer.timelines.update(timelines)
    return observer


def test_a_saga_splits_into_service_and_relay_hops_that_add_up_to_end_to_end() -> None:
    submitted_at = 1000.0
    timeline, t = [], submitted_at
    for event, _service in CHAIN:
        t += 0.010  # the service takes 10 ms to write the event
        written = t
        t += 0.002  # the relay takes 2 ms to get it acknowledged
        timeline.append(Observed(event, written, t))
    completions = Completions()
    completions.record("o-1", "SHIPPED", t)
    load = LoadResult(submitted={"o-1": submitted_at}, started=999.0, finished=1001.0)

    result = analyse(
        SagaBenchConfig(warmup=0.0), load, completions, _observer_with({"o-1": timeline}), t
    )

    assert result["end_to_end_ms"]["p50"] == pytest.approx(72.0)
    hops = result["hops_ms"]
    assert hops["orders API: submit -> OrderCreated written"]["p50"] == pytest.approx(10.0)
    assert hops["payments: previous event -> PaymentSucceeded written"]["p50"] == pytest.approx(
        10.0
    )
    assert hops["relay: OrderShipped written -> broker ack"]["p50"] == pytest.approx(2.0)
    total = sum(h["p50"] for h in hops.values())
    assert total == pytest.approx(result["end_to_end_ms"]["p50"])
    assert result["finished"] == {"SHIPPED": 1} and result["unfinished"] == 0


def test_sagas_started_during_warmup_are_left_out_and_unfinished_ones_counted() -> None:
    completions = Completions()
    completions.record("early", "SHIPPED", 101.0)
    load = LoadResult(
        submitted={"early": 100.0, "late": 110.0, "stuck": 111.0}, started=100.0, finished=120.0
    )
    completions.record("late", "CANCELLED", 110.5)
    result = analyse(SagaBenchConfig(warmup=5.0), load, completions, _observer_with({}), 121.0)
    assert result["measured_sagas"] == 2
    assert result["finished"] == {"CANCELLED": 1}
    assert result["unfinished"] == 1
    assert result["end_to_end_ms"]["p50"] == pytest.approx(500.0)


class _Stack:
    def __init__(self, running: bool) -> None:
        self.running = running

    def status(self) -> dict[str, bool]:
        return {"postgres": self.running, "kafka": self.running}


def test_a_cold_stack_gets_an_unmeasured_warm_up_and_a_running_one_none() -> None:
    import argparse

    from saga_harness.bench.cli import _warmup_seconds

    default = argparse.Namespace(warmup_load=None)
    assert _warmup_seconds(default, _Stack(running=False)) == 45.0
    assert _warmup_seconds(default, _Stack(running=True)) == 0.0
    assert _warmup_seconds(argparse.Namespace(warmup_load=10), _Stack(running=True)) == 10.0
    assert _warmup_seconds(argparse.Namespace(warmup_load=0), _Stack(running=False)) == 0.0


def test_bench_saga_takes_settings_of_the_system_under_test() -> None:
    from saga_harness.bench.cli import _settings

    assert _settings(["SHIPMENTS_BOOKING_SECONDS=2", "PROVIDER_LATENCY_SECONDS=0.3"]) == {
        "SHIPMENTS_BOOKING_SECONDS": "2",
        "PROVIDER_LATENCY_SECONDS": "0.3",
    }
    for wrong in ("SHIPMENTS_BOOKING_SECONDS", "=2", "lower=1", "A B=1"):
        with pytest.raises(SystemExit, match="NAME=VALUE"):
            _settings([wrong])


def test_a_results_json_records_tuning_never_a_secret_or_an_address() -> None:
    from saga_harness.bench.cli import reported_env

    env = {
        "PAYMENTS_PROVIDER_API_KEY": "k",
        "PAYMENTS_PROVIDER_URL": "http://127.0.0.1:1",
        "PAYMENTS_CONSUMERS": "2",
        "NOTIFICATIONS_WEBHOOK_SECRET": "s",
        "AUTH_JWT_SECRET": "j",
        "ORDERS_PENDING_TIMEOUT": "10",
        "PROVIDER_LATENCY_SECONDS": "0.3",
    }
    assert reported_env(env) == {
        "PAYMENTS_CONSUMERS": "2",
        "ORDERS_PENDING_TIMEOUT": "10",
        "PROVIDER_LATENCY_SECONDS": "0.3",
    }


def test_the_load_generator_drops_idle_connections_before_the_api_server_does() -> None:
    import uvicorn

    from saga_harness.bench.load import KEEPALIVE_SECONDS

    server_keepalive = uvicorn.Config(app=None).timeout_keep_alive  # type: ignore[arg-type]
    assert server_keepalive > KEEPALIVE_SECONDS, "a reused connection must still be open"
