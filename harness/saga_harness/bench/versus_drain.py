"""The comparison's drain: a backlog written while the relay is stopped, then it catches up.

Both relays run first and publish ``warmup_events`` to a topic of their own, so that the
JVM's compiler has done its work (a fresh Debezium process reads about 100 events/s in its
first second and some 4,000/s from its eighth on; Python does not warm up, but goes through
the same steps). Then the relay is frozen (SIGSTOP: it keeps its code, its connections and,
for Debezium, its slot), the backlog is committed in transactions of ``CHUNK`` rows (as a
backlog builds up over time; one 100,000-row transaction would reach Debezium as one
decoded transaction), and the relay is thawed. The figure is rows / seconds from the thaw
to the broker's append time of the last event, every event read back from the topic.
"""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg
from psycopg import sql

from saga_harness.bench.relay_figures import check_arrivals
from saga_harness.bench.relay_phase import OUTBOX_COPY, SCHEMA, Progress, backlog_row
from saga_harness.bench.topic_reader import TopicReader
from saga_harness.bench.versus_run import (
    Contender,
    Relay,
    RunContext,
    cpu_per_event,
    freeze,
    running,
    snapshot,
    thaw,
    topic_total,
)

__all__ = ["CHUNK", "run_drain", "warm_up", "write_backlog"]

CHUNK = 1000


def write_backlog(
    conn: psycopg.Connection, *, topic: str, rows: int, aggregates: int, seed: int
) -> dict[str, tuple[str, int]]:
    """COPY ``rows`` events into the outbox, ``CHUNK`` a transaction; id -> (aggregate, nth)."""
    rng = random.Random(seed)
    written: dict[str, tuple[str, int]] = {}
    positions = [0] * aggregates
    for first in range(0, rows, CHUNK):
        with conn.transaction(), conn.cursor().copy(OUTBOX_COPY) as copy:
            for _ in range(min(CHUNK, rows - first)):
                copy.write_row(backlog_row(topic, rng, positions, written))
    # As autovacuum would have done to a backlog that built up over time.
    conn.execute(sql.SQL("VACUUM ANALYZE {}.outbox").format(sql.Identifier(SCHEMA)))
    return written


def warm_up(
    ctx: RunContext, relay: Relay, conn: psycopg.Connection, *, events: int, timeout: float
) -> float:
    """Have the running ``relay`` publish ``events`` rows to the warm-up topic; seconds taken."""
    if events <= 0:
        return 0.0
    started = time.monotonic()
    write_backlog(conn, topic=ctx.warmup_topic, rows=events, aggregates=1000, seed=0)
    with topic_total(ctx.kafka, ctx.warmup_topic) as total:
        while total() < events:
            relay.check_alive()
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{ctx.label}: warm-up not published within {timeout}s")
            time.sleep(0.2)
    return time.monotonic() - started


def run_drain(
    ctx: RunContext,
    contender: Contender,
    *,
    rows: int,
    aggregates: int,
    seed: int,
    warmup_events: int,
    timeout: float,
    say: Progress,
) -> dict[str, Any]:
    """Warm the relay up, freeze it, write the backlog, thaw it, wait for every row; figures."""
    with (
        contender.prepare(ctx),
        psycopg.connect(ctx.database_url, autocommit=True) as conn,
        running(contender.relay(ctx)) as relay,
    ):
        warm_s = warm_up(ctx, relay, conn, events=warmup_events, timeout=timeout)
        say(f"{ctx.label}: warmed up with {warmup_events} events in {warm_s:.1f}s")
        freeze(relay)
        try:
            started = time.monotonic()
            written = write_backlog(
                conn, topic=ctx.topic, rows=rows, aggregates=aggregates, seed=seed
            )
            say(f"{ctx.label}: {rows} rows written in {time.monotonic() - started:.1f}s")
        finally:
            first = snapshot(relay.pid, ctx)
            thaw(relay)
        with topic_total(ctx.kafka, ctx.topic) as total:
            deadline = time.monotonic() + timeout
            while (count := total()) < rows and time.monotonic() < deadline:
                relay.check_alive()
                time.sleep(0.25)
        last = snapshot(relay.pid, ctx)
    reader = TopicReader(ctx.kafka, ctx.topic)
    reader.start()
    try:
        reader.wait_for(rows, timeout=15.0)
        time.sleep(0.5)  # duplicates, if any, come with the rest
    finally:
        reader.stop()
    arrivals = check_arrivals(written, reader.delivered)
    last_append = max(reader.appended.values(), default=first[0])
    elapsed = last_append - first[0]
    per_s = arrivals.arrived / elapsed if elapsed > 0 else 0.0
    say(f"{ctx.label}: {arrivals.arrived}/{rows} in {elapsed:.2f}s ({per_s:,.0f} events/s)")
    return {
        "rows": rows,
        "warmup_s": round(warm_s, 2),
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(per_s, 1),
        "timed_out": count < rows,
        "arrivals": arrivals.as_dict(),
        "cpu": cpu_per_event(first, last, events=rows),
        "reader_errors": reader.errors[:5],
    }
