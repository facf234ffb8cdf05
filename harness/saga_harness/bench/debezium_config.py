"""The Debezium relay's configuration: the connector, the Outbox Event Router, the producer.

Pure: from addresses and names to a ``.properties`` text, so it can be checked without Java.
The router is mapped onto our outbox table as it is (no column added for Debezium):
``event_id`` is the event's id, ``aggregate_id`` the key, ``envelope`` the value, and the
``topic`` column routes each row to the topic named in it. The headers our relay sends
(event id, type, correlation id) are placed the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from saga_runtime.envelope import HEADER_CORRELATION_ID, HEADER_EVENT_ID, HEADER_EVENT_TYPE

__all__ = [
    "LATENCY_TUNING",
    "connector_properties",
    "parse_debezium_overrides",
    "render_properties",
    "write_properties",
]

ROUTER = "io.debezium.transforms.outbox.EventRouter"
# Debezium waits poll.interval.ms (500 ms by default) for more events before it hands a
# batch over; our relay wakes on NOTIFY at once. For a comparison of latency, not of
# defaults, both are tuned for it (recorded in the results, changeable with --debezium-set).
LATENCY_TUNING = {"poll.interval.ms": "5"}


def _producer(bootstrap: str, producer: Mapping[str, object]) -> dict[str, str]:
    """Our relay's producer settings, in the Java client's names where they differ."""
    config = {
        "bootstrap.servers": bootstrap,
        "client.id": "bench-debezium",
        "acks": str(producer.get("acks", "all")),
        "enable.idempotence": str(producer.get("enable.idempotence", True)).lower(),
        "max.in.flight.requests.per.connection": str(
            producer.get("max.in.flight.requests.per.connection", 5)
        ),
        "linger.ms": str(producer.get("linger.ms", 0)),
        "compression.type": str(producer.get("compression.type", "lz4")),
        # librdkafka's message.timeout.ms=0 (never give up) in the Java client's terms.
        "delivery.timeout.ms": str(2**31 - 1),
    }
    return {f"producer.{k}": v for k, v in config.items()}


def connector_properties(
    *,
    database_url: str,
    kafka_bootstrap: str,
    table: str,
    slot: str,
    offsets_file: Path,
    producer: Mapping[str, object] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every property of the relay, ``overrides`` last.

    The slot and the publication (both named ``slot``) are made by the bench before the
    backlog is written, so the connector neither creates them nor snapshots the table:
    it streams every insert from the slot's position on, as a relay that was down would.
    """
    db = conninfo_to_dict(database_url)
    properties = {
        "name": f"bench-debezium-{slot}",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(offsets_file),
        "offset.flush.interval.ms": "1000",
        "database.hostname": str(db.get("host", "127.0.0.1")),
        "database.port": str(db.get("port", 5432)),
        "database.user": str(db.get("user", "postgres")),
        "database.password": str(db.get("password", "")),
        "database.dbname": str(db["dbname"]),
        "topic.prefix": "bench",
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": slot,
        "publication.autocreate.mode": "disabled",
        "snapshot.mode": "no_data",
        "table.include.list": table,
        "transforms": "outbox",
        "transforms.outbox.type": ROUTER,
        "transforms.outbox.table.field.event.id": "event_id",
        "transforms.outbox.table.field.event.key": "aggregate_id",
        "transforms.outbox.table.field.event.payload": "envelope",
        "transforms.outbox.route.by.field": "topic",
        "transforms.outbox.route.topic.replacement": "${routedByValue}",
        "transforms.outbox.table.fields.additional.placement": ",".join(
            (
                f"event_id:header:{HEADER_EVENT_ID}",
                f"event_type:header:{HEADER_EVENT_TYPE}",
                f"correlation_id:header:{HEADER_CORRELATION_ID}",
            )
        ),
        **LATENCY_TUNING,
        **_producer(kafka_bootstrap, producer or {}),
    }
    properties.update(overrides or {})
    return properties


def render_properties(properties: Mapping[str, str]) -> str:
    """A ``.properties`` file: one ``key=value`` a line, ``\\``, ``:`` and ``=`` escaped."""

    def escape(text: str) -> str:
        return (
            text.replace("\\", "\\\\")
            .replace("\n", "\\n")
            .replace("=", "\\=")
            .replace(":", "\\:")
            .replace("#", "\\#")
            .replace("!", "\\!")
        )

    lines = ["# written by sagactl bench relay --against debezium"]
    lines += [f"{escape(k)}={escape(v)}" for k, v in properties.items()]
    return "\n".join(lines) + "\n"


def write_properties(path: Path, properties: Mapping[str, str]) -> None:
    """``render_properties`` into ``path``, readable by its owner only: it holds the database
    password (the local superuser's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(render_properties(properties))


def parse_debezium_overrides(items: list[str]) -> dict[str, str]:
    """``--debezium-set key=value`` pairs (connector, engine or ``producer.*`` properties)."""
    overrides: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        overrides[key.strip()] = value
    return overrides
