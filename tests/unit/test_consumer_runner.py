from __future__ import annotations

import psycopg
import pytest

from saga_runtime import (
    ConsumerRunner,
    ConsumerSettings,
    Envelope,
    Event,
    Outcome,
    RetryableError,
    UnitOfWork,
)
from tests.unit.fakes import (
    FakeConsumer,
    FakeDeadLetters,
    FakeMessage,
    FakeUnitOfWorkFactory,
)


class Asked(Event):
    event_type = "Asked"
    n: int


class Answered(Event):
    event_type = "Answered"
    n: int


def asked(n: int) -> Envelope:
    return Envelope.new(Asked(n=n), aggregate_id="order-1", producer="orders")


def answer(uow: UnitOfWork, event: Envelope) -> None:
    uow.emit(Answered(n=event.payload_as(Asked).n), aggregate_id=event.aggregate_id)


def make_runner(consumer: FakeConsumer, handler=answer, **settings: object):  # type: ignore[no-untyped-def]
    uow = FakeUnitOfWorkFactory()
    letters = FakeDeadLetters()
    runner = ConsumerRunner(
        service="stock",
        topics=["orders.events"],
        handlers={"Asked": handler},
        consumer=consumer,
        uow_factory=uow,  # type: ignore[arg-type]
        inbox=uow.inbox,  # type: ignore[arg-type]
        dead_letters=letters,  # type: ignore[arg-type]
        dead_letter_publisher=letters,
        settings=ConsumerSettings(backoff_initial=0.001, backoff_max=0.002, **settings),  # type: ignore[arg-type]
    )
    return runner, uow, letters


def drain(runner: ConsumerRunner, consumer: FakeConsumer, limit: int = 100) -> list[Outcome | None]:
    outcomes = []
    for _ in range(limit):
        msg = consumer.poll(0)
        if msg is None:
            break
        outcomes.append(runner.process(msg))  # type: ignore[arg-type]
    return outcomes


def test_applies_once_and_stores_the_offset_only_afterwards() -> None:
    event = asked(1)
    consumer = FakeConsumer([FakeMessage(event.to_bytes(), 0), FakeMessage(event.to_bytes(), 1)])
    runner, uow, _ = make_runner(consumer)

    assert drain(runner, consumer) == [Outcome.APPLIED, Outcome.DUPLICATE]
    assert [e.payload for e in uow.outbox.rows] == [{"n": 1}]
    assert uow.outbox.rows[0].causation_id == event.event_id
    assert consumer.stored == [0, 1]


def test_unhandled_event_types_are_acknowledged_and_skipped() -> None:
    other = Envelope(
        event_type="SomethingElse",
        aggregate_id="o",
        correlation_id=asked(0).correlation_id,
        producer="x",
    )
    consumer = FakeConsumer([FakeMessage(other.to_bytes(), 0)])
    runner, uow, letters = make_runner(consumer)
    assert drain(runner, consumer) == [Outcome.IGNORED]
    assert consumer.stored == [0] and not uow.outbox.rows and not letters.letters


def test_transient_database_failure_rewinds_and_retries_without_skipping() -> None:
    failures = iter([psycopg.OperationalError("server closed the connection")] * 2)

    def flaky(uow: UnitOfWork, event: Envelope) -> None:
        exc = next(failures, None)
        if exc:
            raise exc
        answer(uow, event)

    consumer = FakeConsumer(
        [FakeMessage(asked(1).to_bytes(), 0), FakeMessage(asked(2).to_bytes(), 1)]
    )
    runner, _, letters = make_runner(consumer, flaky, max_attempts=1)

    assert drain(runner, consumer) == [
        Outcome.RETRY,
        Outcome.RETRY,
        Outcome.APPLIED,
        Outcome.APPLIED,
    ]
    assert consumer.seeks == [0, 0]
    assert consumer.stored == [0, 1]
    assert not letters.letters, "an outage never dead-letters, however long"


def test_retryable_handler_error_dead_letters_after_max_attempts_and_moves_on() -> None:
    def always_busy(uow: UnitOfWork, event: Envelope) -> None:
        if event.payload["n"] == 1:
            raise RetryableError("provider busy")
        answer(uow, event)

    consumer = FakeConsumer(
        [FakeMessage(asked(1).to_bytes(), 0), FakeMessage(asked(2).to_bytes(), 1)]
    )
    runner, uow, letters = make_runner(consumer, always_busy, max_attempts=3)

    outcomes = drain(runner, consumer)
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.DEAD_LETTERED, Outcome.APPLIED]
    [letter] = letters.letters
    assert (letter.error_type, letter.attempts, letter.source_offset) == ("RetryableError", 3, 0)
    assert [e.payload["n"] for e in uow.outbox.rows] == [2]


@pytest.mark.parametrize("raw", [b"garbage", b'{"event_type": "Asked"}'])
def test_undecodable_messages_are_dead_lettered_with_their_bytes(raw: bytes) -> None:
    consumer = FakeConsumer([FakeMessage(raw, 0)])
    runner, _, letters = make_runner(consumer)
    assert drain(runner, consumer) == [Outcome.DEAD_LETTERED]
    assert letters.letters[0].value == raw
    assert letters.letters[0].error_type == "InvalidEnvelopeError"
    assert consumer.stored == [0]


def test_a_failing_handler_rolls_back_what_it_emitted() -> None:
    def half_done(uow: UnitOfWork, event: Envelope) -> None:
        answer(uow, event)
        raise KeyError("bug after emitting")

    consumer = FakeConsumer([FakeMessage(asked(1).to_bytes(), 0)])
    runner, uow, letters = make_runner(consumer, half_done)
    assert drain(runner, consumer) == [Outcome.DEAD_LETTERED]
    assert uow.outbox.rows == []
    assert letters.letters[0].error_type == "KeyError"
