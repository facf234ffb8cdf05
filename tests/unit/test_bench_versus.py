"""``bench relay --against debezium``'s pure parts: the POM, the relay's properties, the
schedule, the steady load's aggregates, the pooled figures and the table of ratios."""

from __future__ import annotations

import argparse
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from saga_harness.bench.cli import add_relay_parser
from saga_harness.bench.debezium_config import (
    LATENCY_TUNING,
    connector_properties,
    parse_debezium_overrides,
    render_properties,
    write_properties,
)
from saga_harness.bench.versus import VersusConfig, schedule, writers_for
from saga_harness.bench.versus_cli import versus_config, versus_summary
from saga_harness.bench.versus_figures import (
    RatioRow,
    correctness_failures,
    pool_runs,
    ratio_rows,
    render_ratios,
)
from saga_harness.bench.versus_steady import slot_event
from saga_harness.infra.debezium import DEBEZIUM_ARTIFACTS, DEBEZIUM_VERSION, debezium_pom

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _properties(**overrides: str) -> dict[str, str]:
    return connector_properties(
        database_url="postgresql://postgres:secret@127.0.0.1:55435/saga_relay_ab12",
        kafka_bootstrap="127.0.0.1:19392",
        table="orders.outbox",
        slot="bench_saga_relay_ab12",
        offsets_file=Path("/state/run/offsets.dat"),
        producer={"acks": "all", "linger.ms": 0, "compression.type": "lz4"},
        overrides=overrides,
    )


def test_the_pom_asks_for_every_debezium_artifact_at_one_version_without_confluent() -> None:
    root = ET.fromstring(debezium_pom())
    deps = root.findall("m:dependencies/m:dependency", POM_NS)
    debezium = [d for d in deps if d.findtext("m:groupId", namespaces=POM_NS) == "io.debezium"]
    assert sorted(d.findtext("m:artifactId", namespaces=POM_NS) for d in debezium) == sorted(
        DEBEZIUM_ARTIFACTS
    )
    for dep in debezium:
        assert dep.findtext("m:version", namespaces=POM_NS) == DEBEZIUM_VERSION == "3.6.1.Final"
        # The vendor repository its optional Avro converter names is unreachable.
        assert dep.findtext("m:exclusions/m:exclusion/m:groupId", namespaces=POM_NS) == (
            "io.confluent"
        )
    # A logging binding, or the engine's errors go nowhere.
    assert any(d.findtext("m:artifactId", namespaces=POM_NS) == "slf4j-simple" for d in deps)


def test_the_router_is_mapped_onto_our_outbox_columns_and_headers() -> None:
    p = _properties()
    assert p["transforms.outbox.type"] == "io.debezium.transforms.outbox.EventRouter"
    assert p["transforms.outbox.table.field.event.id"] == "event_id"
    assert p["transforms.outbox.table.field.event.key"] == "aggregate_id"
    assert p["transforms.outbox.table.field.event.payload"] == "envelope"
    # The row's topic column names the topic, as our relay reads it.
    assert p["transforms.outbox.route.by.field"] == "topic"
    assert p["transforms.outbox.route.topic.replacement"] == "${routedByValue}"
    assert p["transforms.outbox.table.fields.additional.placement"] == (
        "event_id:header:event_id,event_type:header:event_type,correlation_id:header:correlation_id"
    )


def test_the_connector_streams_pgoutput_from_the_bench_slot_with_file_offsets() -> None:
    p = _properties()
    assert p["plugin.name"] == "pgoutput"
    assert p["slot.name"] == p["publication.name"] == "bench_saga_relay_ab12"
    assert p["publication.autocreate.mode"] == "disabled"
    assert p["snapshot.mode"] == "no_data"
    assert p["table.include.list"] == "orders.outbox"
    assert p["offset.storage"] == "org.apache.kafka.connect.storage.FileOffsetBackingStore"
    assert p["offset.storage.file.filename"] == "/state/run/offsets.dat"
    assert (p["database.hostname"], p["database.port"], p["database.dbname"]) == (
        "127.0.0.1",
        "55435",
        "saga_relay_ab12",
    )
    assert (p["database.user"], p["database.password"]) == ("postgres", "secret")


def test_the_producer_is_configured_like_ours_and_overrides_come_last() -> None:
    p = _properties()
    assert p["producer.acks"] == "all"
    assert p["producer.enable.idempotence"] == "true"
    assert p["producer.linger.ms"] == "0"
    assert p["producer.compression.type"] == "lz4"
    assert p["producer.bootstrap.servers"] == "127.0.0.1:19392"
    assert p["poll.interval.ms"] == LATENCY_TUNING["poll.interval.ms"]
    assert _properties(**{"poll.interval.ms": "500"})["poll.interval.ms"] == "500"


def test_properties_render_one_escaped_line_each() -> None:
    text = render_properties({"a.b": "x=y:z", "route": "${routedByValue}", "p": "C:\\tmp"})
    lines = text.splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["a.b=x\\=y\\:z", "route=${routedByValue}", "p=C\\:\\\\tmp"]


def test_the_properties_file_with_the_password_is_owner_only(tmp_path: Path) -> None:
    config = tmp_path / "relay.properties"
    config.write_text("older, world-readable")
    write_properties(config, {"database.password": "Zq8-secret"})
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert config.read_text().splitlines()[1] == "database.password=Zq8-secret"


def test_debezium_overrides_are_key_value_pairs() -> None:
    assert parse_debezium_overrides(["poll.interval.ms=500", "producer.linger.ms=5"]) == {
        "poll.interval.ms": "500",
        "producer.linger.ms": "5",
    }
    with pytest.raises(ValueError):
        parse_debezium_overrides(["no-equals-sign"])


def test_rounds_alternate_which_relay_goes_first_on_every_workload() -> None:
    config = VersusConfig(workloads=("drain", "steady-200"), rounds=3)
    assert schedule(config) == [
        (1, "drain", "ours"),
        (1, "drain", "debezium"),
        (1, "steady-200", "ours"),
        (1, "steady-200", "debezium"),
        (2, "drain", "debezium"),
        (2, "drain", "ours"),
        (2, "steady-200", "debezium"),
        (2, "steady-200", "ours"),
        (3, "drain", "ours"),
        (3, "drain", "debezium"),
        (3, "steady-200", "ours"),
        (3, "steady-200", "debezium"),
    ]


def test_an_aggregates_steady_events_are_a_whole_round_of_aggregates_apart() -> None:
    assert [slot_event(s, 3) for s in range(7)] == [
        ("bench-order-0", 0),
        ("bench-order-1", 0),
        ("bench-order-2", 0),
        ("bench-order-0", 1),
        ("bench-order-1", 1),
        ("bench-order-2", 1),
        ("bench-order-0", 2),
    ]


def _arrivals(missing: int = 0, violations: int = 0) -> dict[str, int]:
    return {
        "expected": 10,
        "missing": missing,
        "duplicates": 0,
        "unexpected": 0,
        "order_violations": violations,
    }


def _cpu(events: int, relay: float, postgres: float) -> dict[str, object]:
    return {
        "events": events,
        "processes": {"relay": {"cpu_s": relay}, "postgres": {"cpu_s": postgres}, "kafka": {}},
    }


RUNS = [
    {
        "workload": "drain",
        "relay": "ours",
        "figures": {"events_per_s": 20_000.0, "arrivals": _arrivals(), "cpu": _cpu(1000, 1, 2)},
    },
    {
        "workload": "drain",
        "relay": "ours",
        "figures": {"events_per_s": 10_000.0, "arrivals": _arrivals(), "cpu": _cpu(1000, 3, 2)},
    },
    {
        "workload": "drain",
        "relay": "debezium",
        "figures": {"events_per_s": 5_000.0, "arrivals": _arrivals(), "cpu": _cpu(2000, 2, 1)},
    },
    {
        "workload": "steady-200",
        "relay": "ours",
        "figures": {"achieved_rate": 200, "arrivals": _arrivals(), "cpu": _cpu(100, 0.1, 0.2)},
    },
    {
        "workload": "steady-200",
        "relay": "debezium",
        "figures": {
            "achieved_rate": 200,
            "arrivals": _arrivals(missing=1, violations=2),
            "cpu": _cpu(100, 0.2, 0.1),
        },
    },
]
LATENCIES = {
    ("steady-200", "ours"): [0.001, 0.002, 0.003, 0.004],
    ("steady-200", "debezium"): [0.010, 0.020, 0.030, 0.040],
}


def test_rounds_pool_into_mean_rates_pooled_percentiles_and_cpu_per_event() -> None:
    pooled = pool_runs(RUNS, LATENCIES)
    ours_drain = pooled["drain"]["ours"]
    assert ours_drain["events_per_s"] == 15_000.0
    assert ours_drain["events_per_s_rounds"] == [20_000.0, 10_000.0]
    # (1 + 3) s over 2,000 events; the broker's figure is missing, so it is none.
    assert ours_drain["cpu_ms_per_event"] == {"relay": 2.0, "postgres": 2.0, "kafka": None}
    assert pooled["steady-200"]["debezium"]["commit_to_ack_ms"]["p50"] == 20.0
    assert pooled["steady-200"]["ours"]["arrivals"]["expected"] == 10


def test_the_ratio_is_ours_over_debeziums_and_the_winner_follows_the_figures_sense() -> None:
    rows = {(r.workload, r.metric): r for r in ratio_rows(pool_runs(RUNS, LATENCIES))}
    rate = rows[("drain", "events/s")]
    assert (rate.ours, rate.debezium, rate.ratio, rate.winner) == (15_000.0, 5_000.0, 3.0, "ours")
    pg = rows[("drain", "postgres CPU ms/event")]
    assert (pg.ours, pg.debezium, pg.winner) == (2.0, 0.5, "debezium")  # lower is better
    p50 = rows[("steady-200", "commit→ack p50 ms")]
    assert (p50.ours, p50.debezium, p50.ratio, p50.winner) == (2.0, 20.0, 0.1, "ours")
    assert rows[("drain", "kafka CPU ms/event")].ratio is None
    assert rows[("drain", "kafka CPU ms/event")].winner == "-"


def test_the_table_is_markdown_with_a_line_per_figure() -> None:
    table = render_ratios(
        [
            RatioRow("drain", "events/s", 15_000.0, 5_000.0, True),
            RatioRow("steady-1000", "commit→ack p99 ms", 18.5, None, False),
        ]
    )
    assert table.splitlines() == [
        "| workload | figure | ours | Debezium | ours ÷ Debezium | better |",
        "|---|---|---:|---:|---:|---|",
        "| drain | events/s | 15,000 | 5,000 | 3.00 | ours |",
        "| steady-1000 | commit→ack p99 ms | 18.5 | n/a | n/a | - |",
    ]


def test_a_lost_or_reordered_event_is_a_correctness_failure_named_with_its_relay() -> None:
    failures = correctness_failures(pool_runs(RUNS, LATENCIES))
    assert failures == ["steady-200 debezium: 1 missing, 2 out of order, 0 unexpected (of 10)"]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_relay_parser(parser.add_subparsers())
    return parser.parse_args(["relay", *argv])


def test_against_debezium_runs_the_drain_and_each_rate_with_the_shared_options() -> None:
    args = _parse("--against", "debezium", "--rows", "5000", "--rates", "200,1000", "--set",
                  "RELAY_BATCH_SIZE=500", "--debezium-set", "poll.interval.ms=50")  # fmt: skip
    config = versus_config(args)
    assert config.workloads == ("drain", "steady-200", "steady-1000")
    assert (config.rows, config.rounds, config.warmup) == (5000, 2, 5.0)
    assert config.overrides == (("RELAY_BATCH_SIZE", "500"),)
    assert config.debezium_overrides == (("poll.interval.ms", "50"),)
    assert versus_config(_parse("--against", "debezium", "--only", "steady")).workloads == (
        "steady-200",
        "steady-1000",
        "steady-5000",
    )
    with pytest.raises(ValueError):
        versus_config(_parse("--against", "debezium", "--relay", "thread"))


def test_the_summary_shows_the_table_the_failures_and_the_targets() -> None:
    summary = versus_summary(
        {
            "table": "| the table |",
            "correctness_failures": ["drain debezium: 1 missing"],
            "targets": {"steady_1000_p99_no_worse": True, "drain_at_least_equal": False},
        }
    )
    assert "| the table |" in summary
    assert "correctness FAILED: drain debezium: 1 missing" in summary
    assert '"drain_at_least_equal": false' in summary


def test_writers_grow_with_the_rate_so_that_commit_waits_do_not_cap_it() -> None:
    assert [writers_for(r) for r in (200, 1000, 5000)] == [4, 8, 40]
    assert versus_config(_parse("--against", "debezium")).writers is None
    assert versus_config(_parse("--against", "debezium", "--writers", "6")).writers == 6


def test_results_name_paths_under_the_state_dir_relative_to_it(tmp_path) -> None:
    from saga_harness.bench.versus_cli import without_state_dir

    run = tmp_path / "bench" / "relay-vs-debezium-1"
    result = {"logs": str(run), "runs": [{"offsets": str(run / "offsets.dat"), "n": 3}]}
    assert without_state_dir(result, tmp_path) == {
        "logs": "bench/relay-vs-debezium-1",
        "runs": [{"offsets": "bench/relay-vs-debezium-1/offsets.dat", "n": 3}],
    }
