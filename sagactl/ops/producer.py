"""Producing one message and waiting for the broker's acknowledgement (for redrives)."""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from saga_runtime import KafkaSettings
from sagactl.ops.connection import quiet_kafka_logger
from sagactl.ops.errors import OperationFailed

__all__ = ["AckingProducer", "MessageSink"]


class MessageSink(Protocol):
    def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
    ) -> tuple[int, int]: ...


class AckingProducer:
    """``send`` returns (partition, offset) only once the broker acknowledged the message
    (``acks=all``, idempotent), or raises ``OperationFailed``; it never waits forever.

    The default partitioner is the relay's, so a message goes back to the partition its key
    maps to, behind the order's other events.
    """

    def __init__(self, settings: KafkaSettings, *, timeout_s: float = 30.0) -> None:
        self._timeout_s = timeout_s
        config: dict[str, Any] = {
            "client.id": "sagactl",
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": int(timeout_s * 1000),
            # The topic took the original; let the broker judge its size, not the client's
            # 1 MB default (a dead-lettered value can be as large as the topic allows).
            "message.max.bytes": 100 * 1024 * 1024,
            "logger": quiet_kafka_logger(),
            **settings.client_properties(),
        }
        self._producer = Producer(config)

    def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
    ) -> tuple[int, int]:
        reports: list[tuple[KafkaError | None, Message]] = []
        try:
            self._producer.produce(
                topic,
                key=key,
                value=value,
                headers=headers,
                on_delivery=lambda err, msg: reports.append((err, msg)),
            )
        except (KafkaException, BufferError) as exc:
            # Refused before sending (e.g. a topic the client knows to be invalid).
            raise OperationFailed(f"the client refused the message for {topic}: {exc}") from exc
        # message.timeout.ms bounds the wait: a report always comes.
        while not reports:
            self._producer.flush(1.0)
        err, msg = reports[0]
        if err is not None:
            raise OperationFailed(f"the broker did not take the message for {topic}: {err}")
        return int(msg.partition() or 0), int(msg.offset() or 0)

    def close(self) -> None:
        self._producer.flush(self._timeout_s)
