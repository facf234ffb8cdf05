"""The relay benchmark's steady phase: writer threads commit one event per transaction
through the real write path at a fixed rate; commit-to-ack is the broker's append time
minus the commit time, for every event."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from saga_harness.bench.relay_figures import STEADY_P99_TARGET_MS, commit_to_ack, per_second
from saga_harness.bench.relay_phase import (
    BENCH_PRODUCER,
    SCHEMA,
    BenchOrderPlaced,
    Phase,
    RelayBenchConfig,
    bench_event,
    pending_rows,
)
from saga_harness.bench.relay_process import relay_running
from saga_harness.bench.stats import summarize
from saga_harness.bench.topic_reader import TopicReader
from saga_runtime import DatabaseSettings, Outbox, UnitOfWorkFactory, create_pool
from saga_runtime.wakeup import RelayWakeup

__all__ = ["run_steady"]


@dataclass
class _Writes:
    """What the steady phase's writers did, shared between their threads."""

    events: list[tuple[str, BenchOrderPlaced]]
    committed: dict[str, float]  # event id -> wall clock right after its commit returned
    commit_seconds: list[float]
    late_seconds: list[float]  # how far behind its schedule each transaction began
    errors: list[str]
    lock: threading.Lock
    next_slot: int = 0

    def take_slot(self) -> int:
        with self.lock:
            slot = self.next_slot
            self.next_slot += 1
            return slot


def _steady_events(config: RelayBenchConfig) -> list[tuple[str, BenchOrderPlaced]]:
    # Made beforehand, so that the writers' time goes to the write path itself.
    rng = random.Random(config.seed)
    events = []
    for slot in range(int(config.rate * config.duration)):
        aggregate = f"bench-order-{rng.randrange(config.aggregates)}"
        events.append((aggregate, bench_event(aggregate, slot, rng)))
    return events


def _writer(factory: UnitOfWorkFactory, writes: _Writes, *, start: float, rate: float) -> None:
    """Commit the event of each slot this thread takes, at its scheduled time."""
    while not writes.errors:
        slot = writes.take_slot()
        if slot >= len(writes.events):
            return
        due = start + slot / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        aggregate, event = writes.events[slot]
        began = time.time()
        try:
            with factory.begin() as uow:
                env = uow.emit(event, aggregate_id=aggregate)
        except Exception as exc:
            writes.errors.append(repr(exc))
            return
        done = time.time()
        with writes.lock:
            writes.committed[str(env.event_id)] = done
            writes.commit_seconds.append(done - began)
            writes.late_seconds.append(max(0.0, began - due))


def run_steady(phase: Phase) -> dict[str, Any]:
    config = phase.config
    database = DatabaseSettings(url=phase.database_url, pool_min_size=config.writers)
    pool = create_pool(database, role=SCHEMA, name="bench-writer", max_size=config.writers)
    wakeup = RelayWakeup(database, schema=SCHEMA, name="bench-writer")
    factory = UnitOfWorkFactory(
        pool=pool,
        outbox=Outbox(schema=SCHEMA, topic=phase.topic),
        producer=BENCH_PRODUCER,
        wakeup=wakeup,
    )
    writes = _Writes(
        events=_steady_events(config),
        committed={},
        commit_seconds=[],
        late_seconds=[],
        errors=[],
        lock=threading.Lock(),
    )
    reader = TopicReader(phase.kafka, phase.topic)
    relay = phase.relay("steady")
    try:
        with relay_running(relay):
            reader.start()
            start = time.time() + 0.2
            threads = [
                threading.Thread(
                    target=_writer,
                    args=(factory, writes),
                    kwargs={"start": start, "rate": config.rate},
                    name=f"bench-writer-{n}",
                    daemon=True,
                )
                for n in range(config.writers)
            ]
            phase.say(
                f"steady: {config.rate:g} events/s for {config.duration:g}s with "
                f"{config.writers} writers ({len(writes.events)} events)"
            )
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                relay.check_alive()
                time.sleep(1.0)
                elapsed = time.time() - start
                if 0 < elapsed <= config.duration + 1:
                    phase.say(
                        f"steady: {elapsed:4.0f}s  committed {len(writes.committed)}, "
                        f"read back {len(reader.appended)}"
                    )
            if writes.errors:
                raise RuntimeError(f"steady: a writer failed: {writes.errors[0]}")
            finished = max(writes.committed.values(), default=start)
            phase.say("steady: writers done; waiting for the relay and the reader")
            reader.wait_for(len(writes.committed), timeout=15.0)
            marks, pending, failed = _marks(phase.database_url)
    finally:
        reader.stop()
        wakeup.close()
        pool.close()
    committed, appended = writes.committed, reader.appended
    if config.samples is not None:
        _write_samples(config.samples, committed, appended, marks)
    measured = {k: v for k, v in committed.items() if v >= start + config.warmup}
    ack_summary = summarize(commit_to_ack(measured, appended))
    return {
        "rate": config.rate,
        "duration": config.duration,
        "warmup": config.warmup,
        "writers": config.writers,
        "aggregates": config.aggregates,
        "emitted": len(committed),
        "measured": len(measured),
        "achieved_rate": round(len(committed) / max(1e-9, finished - start), 1),
        "seen": sum(1 for k in committed if k in appended),
        "pending_after": pending,
        "failed": failed,
        "commit_to_ack_ms": ack_summary,
        "commit_to_mark_ms": summarize(commit_to_ack(measured, marks)),
        "commit_to_ack_ms_by_second": per_second(committed, appended, start=start),
        "commit_ms": summarize(writes.commit_seconds),
        "writer_late_ms": summarize(writes.late_seconds),
        "reader_errors": reader.errors[:5],
        "meets_target": bool(ack_summary.get("count"))
        and float(ack_summary["p99"]) <= STEADY_P99_TARGET_MS
        and all(k in appended for k in measured),
    }


def _marks(database_url: str) -> tuple[dict[str, float], int, int]:
    """Once the relay is done (or 30 s): each event's mark time, rows pending, rows failed."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while pending_rows(conn) and time.monotonic() < deadline:
            time.sleep(0.1)
        marks = {
            str(r[0]): float(r[1])
            for r in conn.execute(
                "SELECT event_id, extract(epoch FROM published_at) FROM orders.outbox"
                " WHERE published_at IS NOT NULL"
            )
        }
        row = conn.execute(
            "SELECT count(*) FROM orders.outbox WHERE failed_at IS NOT NULL"
        ).fetchone()
        return marks, pending_rows(conn), int(row[0]) if row else 0


def _write_samples(
    path: Path, committed: dict[str, float], appended: dict[str, float], marks: dict[str, float]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        out.write("event_id,committed,appended,marked\n")
        for event_id, at in committed.items():
            out.write(
                f"{event_id},{at:.6f},{appended.get(event_id, '')},{marks.get(event_id, '')}\n"
            )
