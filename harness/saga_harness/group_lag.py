"""How far the services' consumer groups are behind the ends of the topics they read."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from saga_runtime import KafkaSettings, consumer_group, events_topic
from saga_system import SYSTEM

__all__ = ["GroupLag"]


class GroupLag:
    """Every consuming service's group lag, summed: messages in its topics past what it has
    committed. One ListOffsets request for all the ends and one OffsetFetch per group per
    call (asking each partition's watermarks one by one was some 60 requests a second,
    about a tenth of a core of the broker's time taken from the system under test)."""

    def __init__(self, kafka: KafkaSettings, services: Iterable[str] | None = None) -> None:
        self._kafka = kafka
        self._services = list(SYSTEM.consumers() if services is None else services)
        login = kafka.client_properties()
        self._admin = AdminClient(login)
        self._consumers = {
            service: Consumer(
                {
                    **login,
                    "group.id": consumer_group(service, kafka.topic_prefix),
                    "enable.auto.commit": False,
                }
            )
            for service in self._services
        }
        self._partitions: dict[str, list[TopicPartition]] | None = None

    def total(self) -> int:
        """The summed lag now (raises the client's exceptions while the broker is away)."""
        partitions = self._partitions or self._read_partitions()
        every = {(tp.topic, tp.partition) for tps in partitions.values() for tp in tps}
        futures = self._admin.list_offsets(
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in every},  # type: ignore[no-untyped-call]
            request_timeout=5,
        )
        ends = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
        lag = 0
        for service, consumer in self._consumers.items():
            for tp in consumer.committed(partitions[service], timeout=5):
                lag += max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0))
        return lag

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()

    def _read_partitions(self) -> dict[str, list[TopicPartition]]:
        """Each service's subscribed partitions (the system's topics exist before the load)."""
        metadata = self._admin.list_topics(timeout=10)
        partitions: dict[str, list[TopicPartition]] = {}
        for service in self._services:
            topics = [
                events_topic(p, self._kafka.topic_prefix) for p in SYSTEM.subscriptions(service)
            ]
            partitions[service] = []
            for topic in topics:
                found = metadata.topics.get(topic)
                if found is None or found.error is not None or not found.partitions:
                    # A broker just restarted may not know it yet: not cached, asked again.
                    raise KafkaException(f"topic {topic} not known to the broker yet")
                partitions[service] += [TopicPartition(topic, p) for p in found.partitions]
        self._partitions = partitions
        return partitions
