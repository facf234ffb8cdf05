"""The faults the harness injects, each a function of the harness context and a seeded RNG."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from saga_harness.chaos.watchdog import Watchdog
from saga_harness.infra import LocalStack
from saga_harness.system import System
from saga_runtime import KafkaSettings, events_topic
from saga_system import SYSTEM

SERVICES = tuple(SYSTEM.names)


@dataclass
class FaultContext:
    system: System
    stack: LocalStack
    watchdog: Watchdog

    def expected_dead_letters(self) -> int:
        """Each poison message is dead-lettered once by each service subscribed to its topic.

        Counted in the topics themselves at the end of the run, not from what the faults
        meant to write: a producer that retries after a broker restart may write a message
        twice, and a replay may copy a poison message more than once; each copy is a
        message of its own and is dead-lettered on its own.
        """
        found = poison_in_topics(self.system.kafka)
        return sum(count * len(SYSTEM.subscribers(service)) for service, count in found.items())


POISON_KEY_PREFIX = b"poison-"


def poison_in_topics(kafka: KafkaSettings, timeout: float = 120.0) -> Counter[str]:
    """How many poison messages (keyed ``poison-...``) each service's events topic holds
    (``kafka``: the system's topic prefix, logged in as a super user on a secured broker)."""
    topics = {events_topic(service, kafka.topic_prefix): service for service in SERVICES}
    consumer = Consumer(
        {
            **kafka.client_properties(),
            "group.id": f"chaos-count-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    found: Counter[str] = Counter()
    try:
        assignment = [
            TopicPartition(topic, partition, 0)
            for topic in topics
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        consumer.assign(assignment)
        remaining = {(tp.topic, tp.partition) for tp in assignment}
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise RuntimeError(f"counting poison: {sorted(remaining)} not read to the end")
            for msg in consumer.consume(500, 0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard((msg.topic(), msg.partition()))
                    continue
                if (msg.key() or b"").startswith(POISON_KEY_PREFIX):
                    found[topics[str(msg.topic())]] += 1
    finally:
        consumer.close()
    return found


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
    order_id = f"{POISON_KEY_PREFIX.decode()}{uuid.uuid4().hex[:8]}"
    value = rng.choice(
        [
            b"\xff\xfe\x00 not json",
            json.dumps({"event_type": "OrderCreated", "aggregate_id": order_id}).encode(),
        ]
    )
    # As the super user: a forger with a login of its own is refused (the ACLs' tests), and
    # poison must reach the services here.
    producer = Producer({**ctx.system.kafka.client_properties(), "acks": "all"})
    producer.produce(topic, key=order_id.encode(), value=value)
    if producer.flush(30) != 0:
        return f"poison for {topic} not delivered (broker busy)"
    return f"poison message on {topic}"


def replay_topic(ctx: FaultContext, rng: random.Random) -> str:
    """Re-produce a whole topic from the beginning: every event delivered again."""
    service = rng.choice(SERVICES)
    topic = events_topic(service, ctx.system.kafka.topic_prefix)
    login = ctx.system.kafka.client_properties()
    consumer = Consumer(
        {
            **login,
            "group.id": f"chaos-replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    producer = Producer({**login, "acks": "all", "linger.ms": 5})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        remaining, copied = set(partitions), 0
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                continue
            producer.produce(topic, key=msg.key(), value=msg.value(), headers=msg.headers())
            producer.poll(0)
            copied += 1
        if producer.flush(30) != 0:
            raise RuntimeError(f"replay of {topic} not acknowledged by the broker")
    finally:
        consumer.close()
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
