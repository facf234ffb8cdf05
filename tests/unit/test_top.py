"""``sagactl top``'s arithmetic from canned inputs: rates from two scrapes of exposition text,
quantiles from histogram buckets, Prometheus API answers, missing metrics as ``—``, and the
``--json`` document's keys."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from rich.console import Console

from sagactl.cli import main as sagactl_main
from sagactl.top import (
    DEV_UP_TARGETS,
    PrometheusSource,
    Readings,
    build_snapshot,
    default_prometheus_url,
    frame,
    histogram_quantile,
    parse_exposition,
    parse_target,
    readings_between,
)
from sagactl.top.scrape import Scrape

ORDERS_BEFORE = """\
# HELP saga_finished_total Sagas that reached a final state, by state and reason.
# TYPE saga_finished_total counter
saga_finished_total{reason="completed",state="SHIPPED"} 10.0
saga_finished_created{reason="completed",state="SHIPPED"} 1.7e+09
# HELP saga_duration_seconds From a saga's start to its final state.
# TYPE saga_duration_seconds histogram
saga_duration_seconds_bucket{le="0.5",state="SHIPPED"} 4.0
saga_duration_seconds_bucket{le="1.0",state="SHIPPED"} 10.0
saga_duration_seconds_bucket{le="+Inf",state="SHIPPED"} 10.0
saga_duration_seconds_count{state="SHIPPED"} 10.0
saga_duration_seconds_sum{state="SHIPPED"} 6.0
# HELP saga_outbox_pending_rows Outbox rows not yet published.
# TYPE saga_outbox_pending_rows gauge
saga_outbox_pending_rows{service="orders"} 7.0
# HELP saga_stuck_sagas Orders not final 300 s after placed.
# TYPE saga_stuck_sagas gauge
saga_stuck_sagas 0.0
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 3.2
"""

# Two seconds later: 4 more SHIPPED (all under 0.5 s), a first CANCELLED, the backlog drained.
ORDERS_AFTER = """\
# TYPE saga_finished_total counter
saga_finished_total{reason="completed",state="SHIPPED"} 14.0
saga_finished_total{reason="out_of_stock",state="CANCELLED"} 1.0
# TYPE saga_duration_seconds histogram
saga_duration_seconds_bucket{le="0.5",state="SHIPPED"} 8.0
saga_duration_seconds_bucket{le="1.0",state="SHIPPED"} 14.0
saga_duration_seconds_bucket{le="+Inf",state="SHIPPED"} 14.0
saga_duration_seconds_count{state="SHIPPED"} 14.0
# TYPE saga_outbox_pending_rows gauge
saga_outbox_pending_rows{service="orders"} 0.0
# TYPE saga_outbox_oldest_pending_age_seconds gauge
saga_outbox_oldest_pending_age_seconds{service="orders"} 0.0
# TYPE saga_stuck_sagas gauge
saga_stuck_sagas 2.0
"""

PAYMENTS = """\
# TYPE saga_consumer_events_total counter
saga_consumer_events_total{event_type="StockReserved",outcome="applied",service="payments"} %s
saga_consumer_events_total{event_type="other",outcome="dead_lettered",service="payments"} %s
# TYPE saga_consumer_lag_messages gauge
saga_consumer_lag_messages{partition="0",service="payments",topic="stock.events"} 3.0
saga_consumer_lag_messages{partition="1",service="payments",topic="stock.events"} 2.0
# TYPE saga_effect_calls_total counter
saga_effect_calls_total{kind="charge",result="ok",service="payments"} %s
saga_effect_calls_total{kind="charge",result="retry",service="payments"} %s
"""

RELAY = """\
# TYPE saga_relay_active gauge
saga_relay_active{service="orders"} %s
"""


def scrape(at: float, **texts: str | None) -> Scrape:
    return Scrape(
        at=at,
        targets={
            job: None if text is None else parse_exposition(text, job)
            for job, text in texts.items()
        },
    )


def two_scrapes() -> Readings:
    earlier = scrape(
        100.0,
        orders=ORDERS_BEFORE,
        payments=PAYMENTS % (20, 1, 10, 0),
        **{"relay-a": RELAY % 1, "relay-b": RELAY % 0},
    )
    later = scrape(
        102.0,
        orders=ORDERS_AFTER,
        payments=PAYMENTS % (30, 3, 16, 2),
        **{"relay-a": RELAY % 1, "relay-b": None},
    )
    return readings_between(earlier, later)


def snapshot_of(readings: Readings) -> Any:
    return build_snapshot(
        readings,
        source="test",
        outboxes=["orders", "stock"],
        consumers=["payments", "shipments"],
        at=datetime(2026, 12, 2, 20, 0, tzinfo=UTC),
    )


def text_of(renderable: Any) -> str:
    console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does() -> None:
    buckets = [(0.1, 0.0), (0.5, 50.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.99)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.3)
    # A rank beyond the last finite bound: that bound is all we know.
    assert histogram_quantile(0.99, [(1.0, 50.0), (math.inf, 100.0)]) == 1.0
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None  # nothing observed
    assert histogram_quantile(0.5, [(1.0, 3.0)]) is None  # no +Inf bucket
    assert histogram_quantile(0.5, []) is None


def test_rates_come_from_two_scrapes() -> None:
    readings = two_scrapes()
    assert readings.rate_window_s == 2.0
    snapshot = snapshot_of(readings)
    # 4 SHIPPED in 2 s; CANCELLED's series appeared (from 0) with 1.
    assert snapshot.finished_per_s == {"SHIPPED": 2.0, "CANCELLED": 0.5}
    assert snapshot.finished_total_per_s == 2.5
    payments = snapshot.consumers["payments"]
    assert payments.applied_per_s == 5.0
    assert (payments.dead_letters, payments.dead_letters_per_s) == (3.0, 1.0)
    assert payments.lag_messages == {"stock.events": 5.0}  # summed over its partitions
    charge = snapshot.effects["payments"]["charge"]
    assert (charge.calls_per_s, charge.error_ratio) == (4.0, 0.25)  # 6 ok + 2 retry in 2 s
    # Gauges are the later scrape's.
    assert snapshot.outboxes["orders"].pending_rows == 0.0
    assert snapshot.stuck_sagas == 2.0
    # relay-b did not answer the second scrape: down, and no longer counted.
    assert snapshot.targets == {"orders": True, "payments": True, "relay-a": True, "relay-b": False}
    assert snapshot.outboxes["orders"].active_relays == ["relay-a"]


def test_end_to_end_quantiles_come_from_the_buckets_the_window_added() -> None:
    snapshot = snapshot_of(two_scrapes())
    # The window added 4 sagas, all in the first bucket (0, 0.5]: p50 is its middle.
    assert snapshot.duration_p50_s == pytest.approx(0.25)
    assert snapshot.duration_p99_s == pytest.approx(0.495)


def test_a_counter_that_went_down_was_reset_and_counts_from_zero() -> None:
    earlier = scrape(0.0, payments=PAYMENTS % (500, 0, 0, 0))
    later = scrape(4.0, payments=PAYMENTS % (8, 0, 0, 0))  # the process restarted
    assert snapshot_of(readings_between(earlier, later)).consumers["payments"].applied_per_s == 2.0


def test_missing_metrics_are_none_and_shown_as_a_dash() -> None:
    snapshot = snapshot_of(Readings(targets={"orders": False}))
    assert snapshot.finished_total_per_s is None
    assert snapshot.duration_p50_s is None and snapshot.stuck_sagas is None
    assert snapshot.outboxes["stock"].pending_rows is None  # declared, never read
    assert snapshot.consumers["shipments"].applied_per_s is None
    shown = text_of(frame(snapshot))
    assert "—" in shown and "0/1 processes up (down: orders)" in shown
    document = snapshot.as_json()
    assert document["sagas"]["finished_per_s"] is None
    assert document["outboxes"]["stock"]["pending_rows"] is None


def test_the_frame_shows_every_hop() -> None:
    shown = text_of(frame(snapshot_of(two_scrapes())))
    assert "finished 2.50/s (CANCELLED 0.50 · SHIPPED 2.00)" in shown
    assert "p50 250 ms" in shown and "stuck 2" in shown
    assert "relay-a" in shown and "stock 5" in shown and "25%" in shown
    assert "3 (+1.00/s)" in shown  # dead letters since start, and per second


def test_the_json_document_keeps_its_keys() -> None:
    document = json.loads(json.dumps(snapshot_of(two_scrapes()).as_json()))
    assert list(document) == [
        "source",
        "at",
        "rate_window_s",
        "quantile_window_s",
        "targets",
        "sagas",
        "outboxes",
        "consumers",
        "effects",
    ]
    assert document["at"] == "2026-12-02T20:00:00+00:00"
    assert document["targets"]["relay-b"] == "down"
    assert set(document["sagas"]) == {
        "finished_per_s",
        "finished_per_s_by_state",
        "finished_per_s_by_reason",
        "duration_p50_s",
        "duration_p99_s",
        "stuck",
    }
    assert set(document["outboxes"]) == {"orders", "stock"}
    assert set(document["outboxes"]["orders"]) == {
        "pending_rows",
        "oldest_pending_age_s",
        "active_relays",
        "relays_reporting",
        "publish_p99_s",
    }
    assert set(document["consumers"]["payments"]) == {
        "applied_per_s",
        "dead_letters",
        "dead_letters_per_s",
        "lag_messages",
    }
    assert document["sagas"]["finished_per_s_by_reason"] == {
        "CANCELLED": {"out_of_stock": 0.5},
        "SHIPPED": {"completed": 2.0},
    }
    assert document["effects"]["payments"]["charge"] == {"calls_per_s": 4.0, "error_ratio": 0.25}


def prometheus_answer(expression: str) -> list[dict[str, Any]]:
    """What a Prometheus scraping orders, payments and two relays answers ``top``'s queries."""

    def series(value: float, **labels: str) -> dict[str, Any]:
        return {"metric": labels, "value": [1_700_000_000.0, str(value)]}

    if expression.startswith('{__name__=~"'):
        return [
            series(4, __name__="saga_outbox_pending_rows", service="orders", job="orders"),
            series(12.5, __name__="saga_outbox_oldest_pending_age_seconds", service="orders"),
            series(1, __name__="saga_relay_active", service="orders", job="relay-a"),
            series(0, __name__="saga_relay_active", service="orders", job="relay-b"),
            series(0, __name__="saga_stuck_sagas", job="orders"),
        ]
    if expression == "rate(saga_finished_total[1m])":
        return [series(3.0, state="SHIPPED", reason="completed", job="orders")]
    if expression == "rate(saga_duration_seconds_bucket[5m])":
        return [
            series(1.0, le="0.5", state="SHIPPED"),
            series(3.0, le="1.0", state="SHIPPED"),
            series(3.0, le="+Inf", state="SHIPPED"),
        ]
    if expression == "up":
        return [series(1, job="orders"), series(0, job="relay-b")]
    return []  # a metric nothing reports yet


def canned_prometheus(request: httpx.Request) -> httpx.Response:
    assert request.url.path == "/api/v1/query"
    result = prometheus_answer(request.url.params["query"])
    return httpx.Response(
        200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
    )


def test_prometheus_answers_make_the_same_snapshot() -> None:
    source = PrometheusSource("http://prom:9090", transport=httpx.MockTransport(canned_prometheus))
    readings = source.read(2.0)
    assert (readings.rate_window_s, readings.quantile_window_s) == (60.0, 300.0)
    snapshot = snapshot_of(readings)
    assert snapshot.finished_per_s == {"SHIPPED": 3.0}
    assert snapshot.duration_p50_s == pytest.approx(0.625)  # rank 1.5 of 3
    orders = snapshot.outboxes["orders"]
    assert (orders.pending_rows, orders.oldest_pending_age_s) == (4.0, 12.5)
    assert (orders.active_relays, orders.relays_reporting) == (["relay-a"], ["relay-a", "relay-b"])
    assert snapshot.stuck_sagas == 0.0
    assert snapshot.targets == {"orders": True, "relay-b": False}
    assert snapshot.consumers["payments"].applied_per_s is None  # nothing reported it
    assert snapshot.effects == {}


def test_a_refused_query_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def refusing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "error": "parse error"})

    source = PrometheusSource("http://prom:9090", transport=httpx.MockTransport(refusing))
    assert not source.reachable()


@pytest.mark.parametrize(
    "argv",
    [
        ["--metrics", "127.0.0.1:1", "--interval", "0.05"],
        ["--prometheus", "http://127.0.0.1:1"],
    ],
)
def test_a_source_that_does_not_answer_is_one_clear_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert sagactl_main(["top", "--once", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sagactl: ") and "127.0.0.1:1" in err
    assert "Traceback" not in err


def test_targets_are_named_or_named_by_their_address() -> None:
    assert parse_target("relay-a=127.0.0.1:9030") == ("relay-a", "127.0.0.1:9030")
    assert parse_target("localhost:8000") == ("localhost:8000", "localhost:8000")
    assert parse_target("http://10.0.0.5:8000/metrics") == ("10.0.0.5:8000", "10.0.0.5:8000")
    with pytest.raises(ValueError):
        parse_target("orders")


def test_the_default_addresses_are_those_dev_up_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    from saga_harness.infra.prometheus import DEFAULT_PROMETHEUS_PORT
    from saga_harness.monitoring import RELAY_METRICS_PORTS, metrics_env, service_metrics_targets

    relays = zip(("relay-a", "relay-b"), RELAY_METRICS_PORTS, strict=True)
    dev_up = {**service_metrics_targets(metrics_env({}))}
    dev_up.update({name: f"127.0.0.1:{port}" for name, port in relays})
    assert dev_up == DEV_UP_TARGETS
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)
    monkeypatch.delenv("PROMETHEUS_PORT", raising=False)
    assert default_prometheus_url() == f"http://127.0.0.1:{DEFAULT_PROMETHEUS_PORT}"
    monkeypatch.setenv("PROMETHEUS_URL", "http://prometheus:9090")
    assert default_prometheus_url() == "http://prometheus:9090"


def test_the_live_view_keeps_the_last_frame_when_the_source_stops_answering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sagactl.ops.commands import top
    from sagactl.ops.render import Output
    from sagactl.top import PrometheusUnreachable

    class Flaky:
        """Answers once, then does not, then the operator presses Ctrl-C."""

        description = "flaky"

        def __init__(self) -> None:
            self.reads = 0

        def read(self, interval: float) -> Readings:
            self.reads += 1
            if self.reads == 2:
                raise PrometheusUnreachable("Prometheus at http://prom:9090 does not answer")
            if self.reads == 3:
                raise KeyboardInterrupt
            return two_scrapes()

    monkeypatch.setattr(top.time, "sleep", lambda _seconds: None)
    screen = io.StringIO()
    out = Output(json_mode=False, stdout=screen)
    source = Flaky()
    first = top.read(source, 1.0)
    assert top._live(source, first, 1.0, out) == 0  # Ctrl-C ends it quietly
    shown = screen.getvalue()
    assert "source unreachable, showing the last reading" in shown
    assert "finished 2.50/s" in shown  # the last frame is still there
