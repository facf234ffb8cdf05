"""The comparison's steady load: events committed at a fixed rate, commit -> ack for each.

Writer threads commit one event per transaction through the real write path
(``UnitOfWorkFactory``), noting the wall clock right after each commit returns; the topic
stamps each message with the broker's append time (``LogAppendTime``); commit -> ack is the
difference, the same for both relays. Only our relay is woken after a commit (the NOTIFY
is part of its design and of its cost to PostgreSQL); Debezium reads the WAL.

Slot ``n`` writes the ``n // aggregates``-th event of aggregate ``n % aggregates``, so
one aggregate's events are ``aggregates / rate`` seconds apart and never in flight
together: their commit order is their written order, which the checker holds both to.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from saga_harness.bench.relay_figures import check_arrivals, commit_to_ack
from saga_harness.bench.relay_phase import (
    BENCH_PRODUCER,
    SCHEMA,
    BenchOrderPlaced,
    Progress,
    bench_event,
)
from saga_harness.bench.stats import summarize
from saga_harness.bench.topic_reader import TopicReader
from saga_harness.bench.versus_drain import warm_up
from saga_harness.bench.versus_run import Contender, RunContext, cpu_per_event, running, snapshot
from saga_runtime import DatabaseSettings, Outbox, UnitOfWorkFactory, create_pool
from saga_runtime.wakeup import RelayWakeup

__all__ = ["SteadyLoad", "run_steady", "slot_event"]


@dataclass(frozen=True)
class SteadyLoad:
    rate: float
    duration: float
    warmup: float
    writers: int
    aggregates: int
    warmup_events: int  # published through the relay before the load (see versus_drain)


def slot_event(slot: int, aggregates: int) -> tuple[str, int]:
    """The aggregate slot ``slot`` writes to, and the event's position among that one's."""
    return f"bench-order-{slot % aggregates}", slot // aggregates


@dataclass
class _Writes:
    events: list[BenchOrderPlaced]  # made beforehand: the writers' time goes to writing
    committed: dict[str, float] = field(default_factory=dict)  # event id -> after commit
    written: dict[str, tuple[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_slot: int = 0

    def take(self) -> int:
        with self.lock:
            slot, self.next_slot = self.next_slot, self.next_slot + 1
            return slot


def _writer(factory: UnitOfWorkFactory, writes: _Writes, load: SteadyLoad, start: float) -> None:
    while not writes.errors:
        slot = writes.take()
        if slot >= len(writes.events):
            return
        delay = start + slot / load.rate - time.time()
        if delay > 0:
            time.sleep(delay)
        aggregate, position = slot_event(slot, load.aggregates)
        try:
            with factory.begin() as uow:
                env = uow.emit(writes.events[slot], aggregate_id=aggregate)
        except Exception as exc:
            writes.errors.append(repr(exc))
            return
        done = time.time()
        with writes.lock:
            writes.committed[str(env.event_id)] = done
            writes.written[str(env.event_id)] = (aggregate, position)


def run_steady(
    ctx: RunContext, contender: Contender, load: SteadyLoad, *, say: Progress
) -> tuple[dict[str, Any], list[float]]:
    """Figures of one steady run, and every measured commit -> ack (seconds) for pooling."""
    database = DatabaseSettings(url=ctx.database_url, pool_min_size=load.writers)
    writes = _Writes(
        events=[
            bench_event(*slot_event(slot, load.aggregates), random.Random(slot))
            for slot in range(int(load.rate * load.duration))
        ]
    )
    with contender.prepare(ctx):
        pool = create_pool(database, role=SCHEMA, name="bench-writer", max_size=load.writers)
        wakeup = (
            RelayWakeup(database, schema=SCHEMA, name="bench-writer") if contender.wakeup else None
        )
        factory = UnitOfWorkFactory(
            pool=pool,
            outbox=Outbox(schema=SCHEMA, topic=ctx.topic),
            producer=BENCH_PRODUCER,
            wakeup=wakeup,
        )
        reader = TopicReader(ctx.kafka, ctx.topic)
        try:
            with running(contender.relay(ctx)) as relay:
                with psycopg.connect(ctx.database_url, autocommit=True) as conn:
                    warm_up(ctx, relay, conn, events=load.warmup_events, timeout=300)
                reader.start()
                start = time.time() + 0.2
                threads = [
                    threading.Thread(
                        target=_writer, args=(factory, writes, load, start), daemon=True
                    )
                    for _ in range(load.writers)
                ]
                for thread in threads:
                    thread.start()
                first = last = None
                while any(t.is_alive() for t in threads):
                    relay.check_alive()
                    now = time.time()
                    if first is None and now >= start + load.warmup:
                        first = snapshot(relay.pid, ctx)
                    time.sleep(0.05)
                last = snapshot(relay.pid, ctx)
                if writes.errors:
                    raise RuntimeError(f"steady: a writer failed: {writes.errors[0]}")
                finished = max(writes.committed.values(), default=start)
                reader.wait_for(len(writes.committed), timeout=15.0)
                time.sleep(0.5)  # duplicates, if any, come with the rest
        finally:
            reader.stop()
            if wakeup is not None:
                wakeup.close()
            pool.close()
    measured = {k: v for k, v in writes.committed.items() if v >= start + load.warmup}
    latencies = commit_to_ack(measured, reader.appended)
    in_window = sum(1 for v in measured.values() if first is not None and v >= first[0])
    summary = summarize(latencies)
    arrivals = check_arrivals(writes.written, reader.delivered)
    say(
        f"{ctx.label}: {len(writes.committed)} events, commit->ack p50 {summary.get('p50')} "
        f"p99 {summary.get('p99')} ms, missing {arrivals.missing}"
    )
    return {
        "rate": load.rate,
        "duration": load.duration,
        "warmup": load.warmup,
        "writers": load.writers,
        "emitted": len(writes.committed),
        "achieved_rate": round(len(writes.committed) / max(1e-9, finished - start), 1),
        "commit_to_ack_ms": summary,
        "arrivals": arrivals.as_dict(),
        "cpu": cpu_per_event(first or last, last, events=in_window),
        "reader_errors": reader.errors[:5],
    }, latencies
