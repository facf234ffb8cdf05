"""Static group membership (``CONSUMER_GROUP_INSTANCE_ID``): a consumer process killed and
restarted with the same id takes its partitions back at once.

Without it, the partitions of a SIGKILLed consumer stay with the dead member until its
session times out, and the group then rebalances: a process the chaos suite's crash
points kill every few seconds (payments, between a charge and its recording) spent most
of a run out of its group, and orders waiting on it hit their deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer

from saga_runtime import KafkaSettings, consumer_config, ensure_topics
from tests.fixtures.kafka import produce

pytestmark = pytest.mark.integration

SESSION_MS = 45_000

# A consumer process that joins, reports its assignment, and dies without leaving.
CHILD = """
import json, os, signal, sys
from confluent_kafka import Consumer
config = json.loads(sys.argv[1])
consumer = Consumer(config)
consumer.subscribe([sys.argv[2]])
while not consumer.assignment():
    consumer.poll(0.2)
print(len(consumer.assignment()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def config(kafka: KafkaSettings, group: str, instance: str | None) -> dict[str, object]:
    return consumer_config(
        kafka,
        group_id=group,
        client_id="static-test",
        session_timeout_ms=SESSION_MS,
        max_poll_interval_ms=SESSION_MS,
        group_instance_id=instance,
    )


def test_a_killed_static_member_restarted_takes_its_partitions_back_before_its_session_ends(
    kafka: KafkaSettings,
) -> None:
    topic = f"{kafka.topic_prefix}static"
    ensure_topics(kafka, [topic])
    group = f"static-{uuid.uuid4().hex[:8]}"
    settings = config(kafka, group, "payments-0")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(settings), topic],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert child.stdout.strip() == str(kafka.topic_partitions), child.stderr
    produce(kafka, topic, [(b"o-1", b"after the crash")])

    started = time.monotonic()
    restarted = Consumer(settings)
    try:
        restarted.subscribe([topic])
        message = None
        while message is None and time.monotonic() - started < SESSION_MS / 1000:
            message = restarted.poll(0.5)
        waited = time.monotonic() - started
    finally:
        restarted.close()
    assert message is not None and message.value() == b"after the crash"
    # A dynamic member would wait for the dead one's 45 s session to end, then rebalance.
    assert waited < SESSION_MS / 1000 / 2, f"took {waited:.1f}s: the dead member's session"


def test_each_consumer_of_a_service_gets_its_own_static_id() -> None:
    from saga_runtime import ConsumerSettings

    settings = ConsumerSettings(group_instance_id="host-a")
    ids = [
        consumer_config(
            KafkaSettings(),
            group_id="g",
            client_id="c",
            session_timeout_ms=settings.session_timeout_ms,
            group_instance_id=f"{settings.group_instance_id}-payments-{n}",
        )["group.instance.id"]
        for n in range(2)
    ]
    assert ids == ["host-a-payments-0", "host-a-payments-1"]
    assert "group.instance.id" not in consumer_config(
        KafkaSettings(), group_id="g", client_id="c", session_timeout_ms=10_000
    )
