"""Reads one events topic from its beginning: which event ids came, in what order, and when."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from saga_runtime import KafkaSettings
from saga_runtime.envelope import HEADER_EVENT_ID

__all__ = ["TopicReader"]


class TopicReader:
    """A consumer thread (no consumer group): event id -> the broker's first append time.

    The topic stamps messages with ``LogAppendTime``, so a message's timestamp
    is when the broker acknowledged it, whenever this reader gets to it.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self.delivered: list[str] = []  # event ids in consumption order (duplicates included)
        self.appended: dict[str, float] = {}  # event id -> first append time (epoch seconds)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"topic reader not assigned within {timeout}s: {self.errors}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Until ``count`` distinct event ids were read, or ``timeout`` seconds without progress."""
        last, quiet_since = -1, time.monotonic()
        while len(self.appended) < count:
            if len(self.appended) != last:
                last, quiet_since = len(self.appended), time.monotonic()
            elif time.monotonic() - quiet_since > timeout:
                return False
            time.sleep(0.05)
        return True

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._kafka.bootstrap_servers,
                "group.id": f"bench-relay-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                # Latency is read from the broker's append time, not from when this reader
                # gets a message: let the broker batch the fetches (less CPU taken from the
                # relay being measured on the same machine).
                "fetch.wait.max.ms": 200,
                "fetch.min.bytes": 65536,
                **self._kafka.client_config,
            }
        )
        try:
            metadata = consumer.list_topics(self._topic, timeout=10)
            consumer.assign(
                [
                    TopicPartition(self._topic, p, OFFSET_BEGINNING)
                    for p in metadata.topics[self._topic].partitions
                ]
            )
            # The assignment takes effect with the first consume (whose messages count too).
            batch = consumer.consume(num_messages=5000, timeout=0.2)
            self._ready.set()
            while True:
                for msg in batch:
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            self.errors.append(str(error))
                        continue
                    self._record(msg)
                if self._stop.is_set():
                    break
                batch = consumer.consume(num_messages=5000, timeout=0.1)
        except Exception as exc:
            self.errors.append(repr(exc))
        finally:
            consumer.close()

    def _record(self, msg: Any) -> None:
        event_id = next(
            (v.decode() for k, v in msg.headers() or () if k == HEADER_EVENT_ID and v), None
        )
        if event_id is None:
            return
        self.delivered.append(event_id)
        _kind, millis = msg.timestamp()
        self.appended.setdefault(event_id, millis / 1000.0)
