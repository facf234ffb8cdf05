"""The chaos harness counts the poison it expects dead-lettered in the topics themselves.

A producer that retries after a broker restart can write a message twice, and each
copy is dead-lettered on its own: counting what the faults meant to write (the old
way) then expects one dead letter fewer than the services rightly made, and the run
fails with nothing wrong (CI, seed 567089: 3 dead letters, 2 expected).
"""

from __future__ import annotations

from collections import Counter

import pytest

from saga_harness.chaos.faults import poison_in_topics
from saga_runtime import KafkaSettings, ensure_topics, events_topic
from saga_system import SYSTEM
from tests.fixtures.kafka import produce

pytestmark = pytest.mark.integration


def test_every_copy_of_a_poison_message_in_the_topics_is_counted(kafka: KafkaSettings) -> None:
    prefix = kafka.topic_prefix
    ensure_topics(kafka, [events_topic(name, prefix) for name in SYSTEM.names])
    stock, orders = events_topic("stock", prefix), events_topic("orders", prefix)
    duplicate = (b"poison-0001", b"\xff\xfe not json")
    produce(kafka, stock, [duplicate, (b"o-1", b"{}"), duplicate])  # written twice
    produce(kafka, orders, [(b"o-2", b"{}"), (b"poison-0002", b"{}"), (None, b"no key")])

    found = poison_in_topics(kafka)

    assert found == Counter({"stock": 2, "orders": 1})
