"""In-memory stand-ins for Kafka messages, the consumer and the database, for unit tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from saga_runtime import DeadLetter, Envelope, Outbox, UnitOfWork


@dataclass
class FakeMessage:
    _value: bytes | None
    _offset: int
    _topic: str = "orders.events"
    _partition: int = 0
    _key: bytes | None = b"order-1"
    _headers: list[tuple[str, bytes]] = field(default_factory=list)

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def error(self) -> None:
        return None


@dataclass
class FakeConsumer:
    messages: list[FakeMessage]
    position: int = 0
    stored: list[int] = field(default_factory=list)
    seeks: list[int] = field(default_factory=list)
    sought: dict[int, int] = field(default_factory=dict)  # partition -> last seek
    closed: bool = False
    subscribed: list[str] = field(default_factory=list)
    assigned: list[tuple[str, int]] = field(default_factory=list)
    # librdkafka statistics (JSON) handed to ``on_stats`` at each poll, as stats_cb would be.
    stats: str | None = None
    on_stats: Any = None

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed = list(topics)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(topic, partition) for topic, partition in self.assigned]

    def poll(self, timeout: float) -> FakeMessage | None:
        if self.stats is not None and self.on_stats is not None:
            self.on_stats(self.stats)
        if self.position >= len(self.messages):
            return None
        self.position += 1
        return self.messages[self.position - 1]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        batch = self.messages[self.position : self.position + num_messages]
        self.position += len(batch)
        return batch

    def store_offsets(self, message: FakeMessage) -> None:
        self.stored.append(message.offset())

    def seek(self, partition: Any) -> None:
        self.seeks.append(partition.offset)
        self.sought[partition.partition] = partition.offset
        self.position = partition.offset

    def close(self) -> None:
        self.closed = True

    def factory(self, on_stats: Any) -> FakeConsumer:
        """As a ConsumerRunner's consumer factory: this consumer, reporting to ``on_stats``."""
        self.on_stats = on_stats
        return self


class FakeConnection:
    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield


class FakePool:
    @contextmanager
    def connection(self) -> Iterator[FakeConnection]:
        yield FakeConnection()


class FakeOutbox(Outbox):
    def __init__(self) -> None:
        super().__init__(schema="stock", topic="stock.events")
        self.rows: list[Envelope] = []
        self.statements = 0  # add_many calls: one statement each

    def lock_aggregate(self, conn: Any, aggregate_id: str) -> None:
        pass

    def add(self, conn: Any, envelope: Envelope) -> int:
        self.rows.append(envelope)
        return len(self.rows)

    def add_many(self, conn: Any, envelopes: Sequence[Envelope]) -> list[int]:
        self.statements += 1
        return [self.add(conn, envelope) for envelope in envelopes]


@dataclass
class FakeInbox:
    seen: set[str] = field(default_factory=set)
    staged: set[str] = field(default_factory=set)
    statements: int = 0  # record_many calls: one statement each

    def record(self, conn: Any, envelope: Envelope, **_: Any) -> bool:
        if str(envelope.event_id) in self.seen | self.staged:
            return False
        self.staged.add(str(envelope.event_id))
        return True

    def record_many(
        self, conn: Any, records: Sequence[tuple[Envelope, Any, Any, Any]], **_: Any
    ) -> set[Any]:
        self.statements += 1
        return {envelope.event_id for envelope, *_ in records if self.record(conn, envelope)}

    def forget(self, conn: Any, event_ids: Sequence[Any]) -> None:
        self.staged -= {str(event_id) for event_id in event_ids}


@dataclass
class FakeUnitOfWorkFactory:
    """Commits the inbox record and the emitted events only if the block succeeds."""

    outbox: FakeOutbox = field(default_factory=FakeOutbox)
    inbox: FakeInbox = field(default_factory=FakeInbox)
    pool: FakePool = field(default_factory=FakePool)
    producer: str = "stock"
    transactions: int = 0

    @contextmanager
    def begin(self, *, cause: Envelope | None = None) -> Iterator[UnitOfWork]:
        self.transactions += 1
        staged = FakeOutbox()
        self.inbox.staged.clear()
        try:
            uow = UnitOfWork(
                conn=FakeConnection(), outbox=staged, producer=self.producer, cause=cause
            )  # type: ignore[arg-type]
            yield uow
            uow.flush()
        finally:
            committed, self.inbox.staged = set(self.inbox.staged), set()
        self.inbox.seen |= committed
        self.outbox.rows.extend(staged.rows)
        self.outbox.statements += staged.statements


@dataclass
class FakeDeadLetters:
    letters: list[DeadLetter] = field(default_factory=list)

    def add(self, conn: Any, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def publish(self, letter: DeadLetter) -> None:
        pass
