"""The relay benchmark's drain phase: a backlog written first (one COPY), then the relay
drains it; every event must arrive, each aggregate's in the order written."""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
from psycopg import sql

from saga_harness.bench.relay_figures import DRAIN_TARGET_PER_S, check_arrivals
from saga_harness.bench.relay_phase import (
    OUTBOX_COPY,
    SCHEMA,
    Phase,
    backlog_row,
    pending_rows,
)
from saga_harness.bench.relay_process import relay_running
from saga_harness.bench.topic_reader import TopicReader

__all__ = ["run_drain"]


def _write_backlog(phase: Phase, conn: psycopg.Connection) -> dict[str, tuple[str, int]]:
    """COPY the drain's rows into the outbox; event id -> (aggregate, position in it)."""
    config = phase.config
    rng = random.Random(config.seed)
    written: dict[str, tuple[str, int]] = {}
    positions = [0] * config.aggregates
    with conn.cursor().copy(OUTBOX_COPY) as copy:
        for _ in range(config.rows):
            copy.write_row(backlog_row(phase.topic, rng, positions, written))
    # As autovacuum would have done to a backlog that built up over time.
    conn.execute(sql.SQL("VACUUM ANALYZE {}.outbox").format(sql.Identifier(SCHEMA)))
    return written


def run_drain(phase: Phase) -> dict[str, Any]:
    config = phase.config
    rows = config.rows
    phase.say(f"drain: writing {rows} rows over {config.aggregates} aggregates")
    started = time.monotonic()
    with psycopg.connect(phase.database_url, autocommit=True) as conn:
        written = _write_backlog(phase, conn)
        insert_s = time.monotonic() - started
        phase.say(f"drain: {rows} rows written in {insert_s:.1f}s; starting the relay")
        relay = phase.relay("drain")
        with relay_running(relay):
            last_report, last_pending = time.monotonic(), rows
            deadline = time.monotonic() + config.timeout
            while (pending := pending_rows(conn)) > 0:
                relay.check_alive()
                now = time.monotonic()
                if now > deadline:
                    raise RuntimeError(
                        f"drain: {pending} rows still pending after {config.timeout}s"
                    )
                if now - last_report >= 1.0:
                    rate = (last_pending - pending) / (now - last_report)
                    phase.say(f"drain: {rows - pending}/{rows} published ({rate:,.0f}/s)")
                    last_report, last_pending = now, pending
                time.sleep(0.25)
        row = conn.execute(
            "SELECT extract(epoch FROM min(published_at)), extract(epoch FROM max(published_at)),"
            " count(*) FILTER (WHERE failed_at IS NOT NULL),"
            " count(*) FILTER (WHERE published_at IS NOT NULL) FROM orders.outbox"
        ).fetchone()
    assert row is not None
    first_mark, last_mark = float(row[0] or 0), float(row[1] or 0)
    failed, published = int(row[2]), int(row[3])
    elapsed = last_mark - relay.leader_at
    events_per_s = rows / elapsed if elapsed > 0 else 0.0
    phase.say(f"drain: {rows} rows published in {elapsed:.2f}s ({events_per_s:,.0f}/s); reading")

    reader = TopicReader(phase.kafka, phase.topic)
    reader.start()
    try:
        reader.wait_for(rows, timeout=15.0)
        time.sleep(0.5)  # duplicates, if any, come with the rest
    finally:
        reader.stop()
    arrivals = check_arrivals(written, reader.delivered)
    return {
        "rows": rows,
        "aggregates": config.aggregates,
        "insert_s": round(insert_s, 3),
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(events_per_s, 1),
        "first_mark_after_s": round(first_mark - relay.leader_at, 3),
        "published": published,
        "failed": failed,
        "kafka": arrivals.as_dict(),
        "reader_errors": reader.errors[:5],
        "meets_target": events_per_s >= DRAIN_TARGET_PER_S
        and arrivals.missing == 0
        and arrivals.order_violations == 0,
    }
