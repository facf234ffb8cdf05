from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def make_runner(
    consumer: FakeConsumer | Callable[[Any], FakeConsumer], handler=answer, **settings: object
):  # type: ignore[no-untyped-def]
    uow = FakeUnitOfWorkFactory()
    letters = FakeDeadLetters()
    runner = ConsumerRunner(
        service="stock",
        topics=["orders.events"],
        handlers={"Asked": handler},
        consumer=consumer.factory if isinstance(consumer, FakeConsumer) else consumer,  # type: ignore[arg-type]
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


# --- batches: messages already fetched, applied in one transaction ---


def test_fetched_messages_are_applied_in_one_transaction() -> None:
    consumer = FakeConsumer([FakeMessage(asked(n).to_bytes(), n) for n in range(3)])
    runner, uow, _ = make_runner(consumer)
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]
    assert outcomes == [Outcome.APPLIED] * 3
    assert uow.transactions == 1
    assert [e.payload["n"] for e in uow.outbox.rows] == [0, 1, 2]
    assert [e.causation_id for e in uow.outbox.rows] == [
        Envelope.from_bytes(m.value()).event_id
        for m in consumer.messages  # type: ignore[arg-type]
    ], "each emitted event names its own cause"
    assert consumer.stored == [0, 1, 2]


def test_a_duplicate_inside_one_batch_has_no_effect() -> None:
    event = asked(1)
    consumer = FakeConsumer([FakeMessage(event.to_bytes(), 0), FakeMessage(event.to_bytes(), 1)])
    runner, uow, _ = make_runner(consumer)
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]
    assert outcomes == [Outcome.APPLIED, Outcome.DUPLICATE]
    assert len(uow.outbox.rows) == 1


def test_a_transient_failure_rewinds_every_partition_of_the_batch_and_stores_nothing() -> None:
    def down(uow: UnitOfWork, event: Envelope) -> None:
        raise psycopg.OperationalError("server closed the connection")

    consumer = FakeConsumer(
        [
            FakeMessage(asked(1).to_bytes(), 7, _partition=0),
            FakeMessage(asked(2).to_bytes(), 3, _partition=1),
            FakeMessage(asked(3).to_bytes(), 8, _partition=0),
        ]
    )
    runner, uow, letters = make_runner(consumer, down)
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]
    assert outcomes == [Outcome.RETRY] * 3
    assert sorted(consumer.seeks) == [3, 7], "each partition back to its first message"
    assert consumer.stored == [] and uow.outbox.rows == [] and not letters.letters


def test_a_deadlock_between_batches_is_resolved_one_message_per_transaction() -> None:
    calls = {"n": 0}

    def deadlocks_in_a_batch(uow: UnitOfWork, event: Envelope) -> None:
        calls["n"] += 1
        answer(uow, event)
        if calls["n"] == 2:  # the second message of the batch meets another batch's locks
            raise psycopg.errors.DeadlockDetected("deadlock detected")

    consumer = FakeConsumer([FakeMessage(asked(n).to_bytes(), n) for n in range(1, 4)])
    runner, uow, letters = make_runner(consumer, deadlocks_in_a_batch)
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]

    assert outcomes == [Outcome.APPLIED] * 3, "no waiting and retrying the whole batch"
    assert [e.payload["n"] for e in uow.outbox.rows] == [1, 2, 3]
    assert consumer.stored == [1, 2, 3] and consumer.seeks == [] and not letters.letters


def test_a_poison_message_in_a_batch_is_dead_lettered_alone_and_the_rest_applied_once() -> None:
    def picky(uow: UnitOfWork, event: Envelope) -> None:
        answer(uow, event)
        if event.payload["n"] == 2:
            raise ValueError("a bug for this one message")

    consumer = FakeConsumer([FakeMessage(asked(n).to_bytes(), n) for n in range(1, 5)])
    runner, uow, letters = make_runner(consumer, picky)
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]
    assert outcomes == [
        Outcome.APPLIED,
        Outcome.DEAD_LETTERED,
        Outcome.APPLIED,
        Outcome.APPLIED,
    ]
    assert [e.payload["n"] for e in uow.outbox.rows] == [1, 3, 4], "the failed batch left nothing"
    assert [letter.source_offset for letter in letters.letters] == [2]
    assert consumer.stored == [1, 2, 3, 4]


def test_a_retry_inside_the_fallback_stops_the_batch_and_rewinds_what_follows() -> None:
    def busy(uow: UnitOfWork, event: Envelope) -> None:
        if event.payload["n"] == 2:
            raise RetryableError("provider busy")
        answer(uow, event)

    consumer = FakeConsumer(
        [
            FakeMessage(asked(1).to_bytes(), 1),
            FakeMessage(asked(2).to_bytes(), 2),
            FakeMessage(asked(3).to_bytes(), 5, _partition=1),
            FakeMessage(asked(4).to_bytes(), 3),
        ]
    )
    runner, uow, _ = make_runner(consumer, busy, max_attempts=3)
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]
    assert outcomes == [Outcome.APPLIED, Outcome.RETRY]
    assert consumer.sought == {0: 2, 1: 5}, "back to the retried message and the unprocessed one"
    assert consumer.stored == [1]
    assert [e.payload["n"] for e in uow.outbox.rows] == [1]


def test_messages_of_other_types_are_skipped_by_their_header_without_parsing() -> None:
    other = FakeMessage(b"not even json", 1, _headers=[("event_type", b"SomethingElse")])
    consumer = FakeConsumer([FakeMessage(asked(1).to_bytes(), 0), other])
    runner, _, letters = make_runner(consumer)
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]
    assert outcomes == [Outcome.APPLIED, Outcome.IGNORED]
    assert consumer.stored == [0, 1] and not letters.letters


def test_a_batch_commits_early_when_it_runs_out_of_time_and_goes_on_in_a_new_one() -> None:
    consumer = FakeConsumer([FakeMessage(asked(n).to_bytes(), n) for n in range(3)])
    runner, uow, _ = make_runner(consumer, batch_max_seconds=0)
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]
    assert outcomes == [Outcome.APPLIED] * 3
    assert uow.transactions == 3, "time is up after each message: each commits on its own"
    assert [e.payload["n"] for e in uow.outbox.rows] == [0, 1, 2]
    assert consumer.stored == [0, 1, 2] and consumer.seeks == []
