"""The faults the harness injects, each a function of the harness context and a seeded RNG."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition

from saga_harness.chaos.watchdog import Watchdog
from saga_harness.infra import LocalStack
from saga_harness.system import System
from saga_runtime import events_topic
from saga_system import SYSTEM

SERVICES = tuple(SYSTEM.names)


@dataclass
class FaultContext:
    system: System
    stack: LocalStack
    watchdog: Watchdog
    # Poison messages sitting in each producer's topic (a topic replay copies them too).
    poison: Counter[str] = field(default_factory=Counter)

    @property
    def expected_dead_letters(self) -> int:
        """Each poison message is dead-lettered once by each service subscribed to its topic."""
        return sum(
            count * len(SYSTEM.subscribers(service)) for service, count in self.poison.items()
        )


Fault = Callable[[FaultContext, random.Random], str]


def kill_service(ctx: FaultContext, rng: random.Random) -> str:
    name = rng.choice(SERVICES)
    down = rng.uniform(0.2, 3.0)
    ctx.watchdog.kill(name, hold=True)
    time.sleep(down)
    ctx.watchdog.release(name)
    return f"SIGKILL {name}, down {down:.1f}s"


def kill_relay(ctx: FaultContext, rng: random.Random) -> str:
    relays = sorted(n for n in ctx.system.processes if n.startswith("relay-"))
    name = rng.choice(relays)
    ctx.watchdog.kill(name)
    return f"SIGKILL {name} (its standby takes over)"


def kill_provider(ctx: FaultContext, rng: random.Random) -> str:
    down = rng.uniform(1.0, 6.0)
    ctx.watchdog.kill("provider", hold=True)
    time.sleep(down)
    ctx.watchdog.release("provider")
    return f"payment provider down {down:.1f}s"


def kill_broker(ctx: FaultContext, rng: random.Random) -> str:
    down = rng.uniform(1.0, 5.0)
    ctx.stack.kafka.kill()
    time.sleep(down)
    ctx.stack.kafka.start()
    return f"SIGKILL Kafka, restarted after {down:.1f}s"


def pause_broker(ctx: FaultContext, rng: random.Random) -> str:
    paused = rng.uniform(2.0, 8.0)
    ctx.stack.kafka.pause()
    try:
        time.sleep(paused)
    finally:
        ctx.stack.kafka.resume()
    return f"SIGSTOP Kafka for {paused:.1f}s"


def restart_postgres(ctx: FaultContext, rng: random.Random) -> str:
    ctx.stack.postgres.restart()
    return "PostgreSQL restarted"


def inject_poison(ctx: FaultContext, rng: random.Random) -> str:
    producer_service = rng.choice(SERVICES)
    topic = events_topic(producer_service, ctx.system.kafka.topic_prefix)
    order_id = f"poison-{uuid.uuid4().hex[:8]}"
    value = rng.choice(
        [
            b"\xff\xfe\x00 not json",
            json.dumps({"event_type": "OrderCreated", "aggregate_id": order_id}).encode(),
        ]
    )
    producer = Producer({"bootstrap.servers": ctx.system.kafka.bootstrap_servers, "acks": "all"})
    producer.produce(topic, key=order_id.encode(), value=value)
    if producer.flush(30) != 0:
        return f"poison for {topic} not delivered (broker busy)"
    ctx.poison[producer_service] += 1
    return f"poison message on {topic}"


def replay_topic(ctx: FaultContext, rng: random.Random) -> str:
    """Re-produce a whole topic from the beginning: every event delivered again."""
    service = rng.choice(SERVICES)
    topic = events_topic(service, ctx.system.kafka.topic_prefix)
    bootstrap = ctx.system.kafka.bootstrap_servers
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        remaining, copied = set(partitions), 0
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                remaining.discard(msg.partition())
                continue
            producer.produce(topic, key=msg.key(), value=msg.value(), headers=msg.headers())
            producer.poll(0)
            copied += 1
        if producer.flush(30) != 0:
            raise RuntimeError(f"replay of {topic} not acknowledged by the broker")
    finally:
        consumer.close()
    ctx.poison[service] *= 2  # its poison messages were copied with the rest
    return f"replayed {copied} messages of {topic}"


FAULTS: dict[str, Fault] = {
    "kill_service": kill_service,
    "kill_relay": kill_relay,
    "kill_provider": kill_provider,
    "kill_broker": kill_broker,
    "pause_broker": pause_broker,
    "restart_postgres": restart_postgres,
    "inject_poison": inject_poison,
    "replay_topic": replay_topic,
}
