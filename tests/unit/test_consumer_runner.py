from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException

from saga_runtime import (
    ConsumerRunner,
    ConsumerSettings,
    Envelope,
    Event,
    KafkaSettings,
    Outcome,
    RetryableError,
    RetryUntilDoneError,
    UnitOfWork,
    consumer_config,
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
    consumer: FakeConsumer | Callable[[Any], FakeConsumer],
    handler=answer,
    sources: dict[str, str] | None = None,
    **settings: object,
):  # type: ignore[no-untyped-def]
    uow = FakeUnitOfWorkFactory()
    letters = FakeDeadLetters()
    # A batch commits early once its time is up: out of the way, unless a test sets it.
    settings.setdefault("batch_max_seconds", 60.0)
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
        sources=sources,
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


def _typed(event: Envelope, offset: int, header_type: str) -> FakeMessage:
    return FakeMessage(event.to_bytes(), offset, _headers=[("event_type", header_type.encode())])


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "in a batch"])
def test_a_message_is_judged_by_one_rule_alone_and_in_a_batch(batched: bool) -> None:
    """The header names the type the relay published; the body must agree with it.

    Alone and in a batch alike: a header naming a type the service does not handle is
    skipped unparsed; a header that disagrees with the body is poison.
    """
    skipped = _typed(asked(1), 0, "SomethingElse")  # body: Asked, which is handled
    forged = _typed(asked(2), 1, "Asked")  # consistent: applied
    lying = _typed(
        Envelope(
            event_type="Other",
            aggregate_id="o",
            correlation_id=asked(0).correlation_id,
            producer="x",
        ),
        2,
        "Asked",
    )
    consumer = FakeConsumer([skipped, forged, lying])
    runner, uow, letters = make_runner(consumer)
    polled = consumer.consume(10, 0)
    outcomes = runner.process_batch(polled) if batched else [runner.process(m) for m in polled]  # type: ignore[arg-type]
    assert outcomes == [Outcome.IGNORED, Outcome.APPLIED, Outcome.DEAD_LETTERED]
    assert [e.payload for e in uow.outbox.rows] == [{"n": 2}]
    [letter] = letters.letters
    assert "disagrees" in letter.error


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "in a batch"])
def test_an_event_from_another_topic_than_its_producers_is_forged(batched: bool) -> None:
    """Only the declared producer's topic may carry its events: any other is dead-lettered
    as forged and never applied, and what comes from the right topic still is."""
    genuine = FakeMessage(asked(1).to_bytes(), 0)
    forged = FakeMessage(asked(2).to_bytes(), 0, _topic="payments.events")
    consumer = FakeConsumer([genuine, forged])
    runner, uow, letters = make_runner(consumer, sources={"Asked": "orders.events"})
    polled = consumer.consume(10, 0)
    outcomes = runner.process_batch(polled) if batched else [runner.process(m) for m in polled]  # type: ignore[arg-type]
    assert outcomes == [Outcome.APPLIED, Outcome.DEAD_LETTERED]
    assert [e.payload for e in uow.outbox.rows] == [{"n": 1}]
    [letter] = letters.letters
    assert letter.error_type == "ForgedEventError"
    assert letter.source_topic == "payments.events"
    assert "orders.events" in letter.error


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


def test_a_batch_costs_one_inbox_statement_and_one_outbox_statement_however_long() -> None:
    events = [asked(n) for n in range(12)]
    consumer = FakeConsumer([FakeMessage(e.to_bytes(), n) for n, e in enumerate(events)])
    runner, uow, _ = make_runner(consumer)
    assert runner.process_batch(consumer.consume(100, 0)) == [Outcome.APPLIED] * 12  # type: ignore[arg-type]
    assert uow.inbox.statements == 1, "the batch's inbox records go in one statement"
    assert uow.outbox.statements == 1, "its twelve events are written by one statement"
    assert [e.payload["n"] for e in uow.outbox.rows] == list(range(12)), "in the order emitted"
    assert uow.transactions == 1


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


# --- retry budgets, the poll interval, side effects, a failing dead-letter copy ---


class FakeClock:
    """A monotonic clock that moves only when told (handlers advance it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def runner_with(
    consumer: FakeConsumer,
    handlers: dict[str, Any],
    *,
    clock: FakeClock | None = None,
    side_effecting: tuple[str, ...] = (),
    publisher: Any = None,
    **settings: object,
):  # type: ignore[no-untyped-def]
    uow = FakeUnitOfWorkFactory()
    letters = FakeDeadLetters()
    values: dict[str, object] = {"backoff_initial": 0.001, "backoff_max": 0.002}
    values.update(settings)
    runner = ConsumerRunner(
        service="stock",
        topics=["orders.events"],
        handlers=handlers,
        consumer=consumer.factory,  # type: ignore[arg-type]
        uow_factory=uow,  # type: ignore[arg-type]
        inbox=uow.inbox,  # type: ignore[arg-type]
        dead_letters=letters,  # type: ignore[arg-type]
        dead_letter_publisher=publisher or letters,
        settings=ConsumerSettings(**values),  # type: ignore[arg-type]
        side_effecting=side_effecting,
        **({"clock": clock} if clock else {}),
    )
    return runner, uow, letters


def test_a_dependency_outage_is_retried_for_the_time_budget_not_a_few_attempts() -> None:
    """Five quick attempts used to dead-letter a message after ~3 s of SMTP downtime."""
    clock = FakeClock()

    def provider_down(uow: UnitOfWork, event: Envelope) -> None:
        clock.now += 100.0  # each attempt (and its wait) takes 100 s of outage
        raise RetryableError("provider unavailable")

    consumer = FakeConsumer([FakeMessage(asked(1).to_bytes(), 0)])
    runner, _, letters = runner_with(consumer, {"Asked": provider_down}, clock=clock, retry_for=600)

    outcomes = drain(runner, consumer)
    # Failing since the first attempt: 100 s, 200 s ... the seventh attempt is at 600 s.
    assert outcomes == [Outcome.RETRY] * 6 + [Outcome.DEAD_LETTERED]
    [letter] = letters.letters
    assert (letter.error_type, letter.attempts) == ("RetryableError", 7)


def test_a_step_that_must_happen_is_retried_past_any_budget() -> None:
    """A refund the provider cannot take yet is never given up on (RetryUntilDoneError)."""
    clock = FakeClock()

    def refund_provider_down(uow: UnitOfWork, event: Envelope) -> None:
        clock.now += 100.0
        raise RetryUntilDoneError("provider unavailable")

    consumer = FakeConsumer([FakeMessage(asked(1).to_bytes(), 0)])
    runner, _, letters = runner_with(
        consumer, {"Asked": refund_provider_down}, clock=clock, retry_for=600, max_attempts=3
    )
    assert drain(runner, consumer, limit=30) == [Outcome.RETRY] * 30
    assert not letters.letters and consumer.stored == []


def test_a_transaction_the_server_ended_for_idling_counts_against_the_budget() -> None:
    """A handler that always waits past idle_in_transaction_session_timeout is not retried
    for ever like a database outage (each attempt may repeat its side effect)."""
    clock = FakeClock()

    def waits_too_long(uow: UnitOfWork, event: Envelope) -> None:
        clock.now += 100.0
        raise psycopg.errors.IdleInTransactionSessionTimeout("terminating connection")

    consumer = FakeConsumer([FakeMessage(asked(1).to_bytes(), 0)])
    runner, _, letters = runner_with(
        consumer, {"Asked": waits_too_long}, clock=clock, retry_for=600
    )
    assert drain(runner, consumer) == [Outcome.RETRY] * 6 + [Outcome.DEAD_LETTERED]
    [letter] = letters.letters
    assert letter.error_type == "IdleInTransactionSessionTimeout"


def test_the_wait_between_attempts_is_capped_and_a_stop_cuts_it_short() -> None:
    def down(uow: UnitOfWork, event: Envelope) -> None:
        raise RetryableError("carrier unavailable")

    consumer = FakeConsumer([FakeMessage(asked(1).to_bytes(), 0)])
    runner, _, _ = runner_with(
        consumer, {"Asked": down}, backoff_initial=0.2, retry_backoff_max=30.0
    )
    delays = [runner._retries.delay(n) for n in range(1, 40)]
    assert delays[0] <= 0.2 and max(delays) <= 30.0 and delays[-1] >= 24.0

    waiting, _, _ = runner_with(
        consumer, {"Asked": down}, backoff_initial=25.0, retry_backoff_max=30.0
    )
    stopper = threading.Timer(0.2, waiting.stop)
    stopper.start()
    started = time.monotonic()
    assert waiting.process(consumer.poll(0)) is Outcome.RETRY  # type: ignore[arg-type]
    assert time.monotonic() - started < 10, "SIGTERM must not wait out a 25 s backoff"


def test_a_long_batch_goes_back_to_poll_before_max_poll_interval() -> None:
    """Slow handlers (a provider taking 40 s each) must not hold the loop past the interval."""
    clock = FakeClock()
    ran: list[int] = []

    def slow(uow: UnitOfWork, event: Envelope) -> None:
        clock.now += 40.0
        ran.append(event.payload["n"])
        answer(uow, event)

    consumer = FakeConsumer([FakeMessage(asked(n).to_bytes(), n) for n in range(5)])
    runner, uow, _ = runner_with(
        consumer, {"Asked": slow}, clock=clock, max_poll_interval_ms=100_000, batch_max_seconds=60
    )
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]

    # 80 s after the poll, more than half of the 100 s interval: commit, rewind, poll.
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED]
    assert ran == [0, 1] and consumer.stored == [0, 1]
    assert consumer.seeks == [2], "the rest comes again with the next poll"
    assert [e.payload["n"] for e in uow.outbox.rows] == [0, 1]


def test_the_one_by_one_fallback_also_goes_back_to_poll_in_time() -> None:
    clock = FakeClock()

    def slow_and_one_bug(uow: UnitOfWork, event: Envelope) -> None:
        clock.now += 20.0
        answer(uow, event)
        if event.payload["n"] == 0:
            raise ValueError("a bug: the batch falls back to one message per transaction")

    consumer = FakeConsumer([FakeMessage(asked(n).to_bytes(), n) for n in range(6)])
    runner, _, letters = runner_with(
        consumer,
        {"Asked": slow_and_one_bug},
        clock=clock,
        max_poll_interval_ms=100_000,
        batch_max_seconds=600,
    )
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]

    # The failed batch took 20 s, then 0 (dead-lettered), 1 alone: 60 s > 50 s.
    assert outcomes == [Outcome.DEAD_LETTERED, Outcome.APPLIED]
    assert consumer.stored == [0, 1] and consumer.seeks == [2]
    assert [letter.source_offset for letter in letters.letters] == [0]


def test_a_retry_wait_never_holds_the_loop_past_the_poll_interval() -> None:
    clock = FakeClock()

    def slow_then_down(uow: UnitOfWork, event: Envelope) -> None:
        clock.now += 49.0  # the attempt itself used almost all of the 50 s share
        raise RetryableError("provider unavailable")

    consumer = FakeConsumer([FakeMessage(asked(1).to_bytes(), 0)])
    runner, _, _ = runner_with(
        consumer,
        {"Asked": slow_then_down},
        clock=clock,
        max_poll_interval_ms=100_000,
        backoff_initial=20.0,
        retry_backoff_max=30.0,
    )
    started = time.monotonic()
    assert runner.process_batch(consumer.consume(1, 0)) == [Outcome.RETRY]  # type: ignore[arg-type]
    assert time.monotonic() - started < 5, "a 20 s backoff cut to the 1 s left of the share"


def test_max_poll_interval_is_set_from_the_settings_and_checked_against_the_session() -> None:
    settings = ConsumerSettings(max_poll_interval_ms=120_000)
    config = consumer_config(
        KafkaSettings(),
        group_id="g",
        client_id="c",
        session_timeout_ms=settings.session_timeout_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
    )
    assert config["max.poll.interval.ms"] == 120_000
    # Committed every second, not librdkafka's 5 s: a process killed within seconds of
    # starting must still move its group's offsets on.
    assert config["auto.commit.interval.ms"] == settings.commit_interval_ms == 1_000
    with pytest.raises(ValueError, match="MAX_POLL_INTERVAL"):
        ConsumerSettings(max_poll_interval_ms=5_000, session_timeout_ms=10_000)


class Mailed(Event):
    event_type = "Mailed"
    n: int


def test_a_side_effecting_handler_is_never_rerun_because_another_message_failed() -> None:
    """One bad message used to roll back the batch and re-send every mail sent before it."""
    sent: list[int] = []

    def mail(uow: UnitOfWork, event: Envelope) -> None:
        sent.append(event.payload["n"])

    def bookkeeping(uow: UnitOfWork, event: Envelope) -> None:
        answer(uow, event)
        if event.payload["n"] == 4:
            raise ValueError("a bug in another handler")

    def mailed(n: int) -> Envelope:
        return Envelope.new(Mailed(n=n), aggregate_id=f"order-{n}", producer="orders")

    events = [asked(0), mailed(1), asked(2), mailed(3), asked(4), mailed(5), asked(6)]
    consumer = FakeConsumer([FakeMessage(e.to_bytes(), n) for n, e in enumerate(events)])
    runner, uow, letters = runner_with(
        consumer, {"Asked": bookkeeping, "Mailed": mail}, side_effecting=("Mailed",)
    )
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]

    assert sent == [1, 3, 5], "each mail sent once, whatever failed after it"
    assert outcomes == [Outcome.APPLIED] * 4 + [Outcome.DEAD_LETTERED] + [Outcome.APPLIED] * 2
    assert [letter.source_offset for letter in letters.letters] == [4]
    assert consumer.stored == list(range(7))
    assert [e.payload["n"] for e in uow.outbox.rows] == [0, 2, 6]


def test_side_effecting_messages_commit_alone_and_the_others_still_batch() -> None:
    def mailed(n: int) -> Envelope:
        return Envelope.new(Mailed(n=n), aggregate_id="order-1", producer="orders")

    events = [asked(0), asked(1), mailed(2), asked(3), asked(4)]
    consumer = FakeConsumer([FakeMessage(e.to_bytes(), n) for n, e in enumerate(events)])
    runner, uow, _ = runner_with(
        consumer,
        {"Asked": answer, "Mailed": lambda uow, event: None},
        side_effecting=("Mailed",),
        batch_max_seconds=60,
    )
    assert runner.process_batch(consumer.consume(10, 0)) == [Outcome.APPLIED] * 5  # type: ignore[arg-type]
    assert uow.transactions == 3, "[0, 1], then [2] alone, then [3, 4]"


def test_side_effecting_types_must_have_handlers() -> None:
    with pytest.raises(ValueError, match="Mailed"):
        runner_with(FakeConsumer([]), {"Asked": answer}, side_effecting=("Mailed",))


class FailingPublisher:
    """The dead-letter copy fails as a real producer can, then works."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.published: list[Any] = []

    def publish(self, letter: Any) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.published.append(letter)


def test_a_failing_dead_letter_producer_is_retried_not_a_crash() -> None:
    publisher = FailingPublisher(
        BufferError("Local: Queue full"), KafkaException(KafkaError(KafkaError._TRANSPORT))
    )
    consumer = FakeConsumer([FakeMessage(b"poison", 0), FakeMessage(asked(1).to_bytes(), 1)])
    runner, _, _ = runner_with(consumer, {"Asked": answer}, publisher=publisher)

    assert drain(runner, consumer) == [
        Outcome.RETRY,
        Outcome.RETRY,
        Outcome.DEAD_LETTERED,
        Outcome.APPLIED,
    ]
    assert consumer.seeks == [0, 0] and consumer.stored == [0, 1]
    assert len(publisher.published) == 1


def test_unreadable_headers_do_not_stop_the_runner() -> None:
    class BadHeaders(FakeMessage):
        def headers(self) -> list[tuple[str, bytes]]:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    consumer = FakeConsumer([BadHeaders(b"poison", 0), FakeMessage(asked(1).to_bytes(), 1)])
    runner, _, letters = runner_with(consumer, {"Asked": answer})
    outcomes = runner.process_batch(consumer.consume(10, 0))  # type: ignore[arg-type]
    assert outcomes == [Outcome.DEAD_LETTERED, Outcome.APPLIED]
    [letter] = letters.letters
    assert letter.value == b"poison" and "headers unreadable" in letter.error


def test_a_failing_side_effecting_message_runs_once_per_attempt() -> None:
    """Alone from the start: no batch attempt and then a second, one-by-one attempt."""
    calls: list[int] = []

    def mail_then_webhook_down(uow: UnitOfWork, event: Envelope) -> None:
        calls.append(event.payload["n"])
        raise RetryableError("webhook unavailable")

    mailed = Envelope.new(Mailed(n=1), aggregate_id="order-1", producer="orders")
    consumer = FakeConsumer(
        [FakeMessage(mailed.to_bytes(), 4), FakeMessage(asked(2).to_bytes(), 3, _partition=1)]
    )
    runner, uow, _ = runner_with(
        consumer,
        {"Asked": answer, "Mailed": mail_then_webhook_down},
        side_effecting=("Mailed",),
    )
    assert runner.process_batch(consumer.consume(10, 0)) == [Outcome.RETRY]  # type: ignore[arg-type]
    assert calls == [1], "one attempt, one call"
    assert consumer.sought == {0: 4, 1: 3} and consumer.stored == []
    assert uow.outbox.rows == []


def test_a_failing_side_effecting_message_is_not_overtaken_on_its_own_partition() -> None:
    """The rewind after its retry must not move its partition past it to the next message."""

    def webhook_down(uow: UnitOfWork, event: Envelope) -> None:
        raise RetryableError("webhook unavailable")

    first = Envelope.new(Mailed(n=1), aggregate_id="order-1", producer="orders")
    second = Envelope.new(Mailed(n=2), aggregate_id="order-2", producer="orders")
    consumer = FakeConsumer([FakeMessage(first.to_bytes(), 4), FakeMessage(second.to_bytes(), 5)])
    runner, _, letters = runner_with(consumer, {"Mailed": webhook_down}, side_effecting=("Mailed",))
    assert runner.process_batch(consumer.consume(10, 0)) == [Outcome.RETRY]  # type: ignore[arg-type]
    assert consumer.sought == {0: 4}, "the partition goes back to the failed message"
    assert consumer.stored == [] and not letters.letters


def test_a_retry_budget_starts_again_for_a_message_that_comes_back_much_later() -> None:
    clock = FakeClock()

    def down(uow: UnitOfWork, event: Envelope) -> None:
        raise RetryableError("provider unavailable")

    consumer = FakeConsumer([FakeMessage(asked(1).to_bytes(), 0)])
    runner, _, letters = runner_with(consumer, {"Asked": down}, clock=clock, retry_for=600)
    assert drain(runner, consumer, limit=1) == [Outcome.RETRY]
    clock.now += 3600.0  # its partition was elsewhere for an hour, then came back
    assert drain(runner, consumer, limit=1) == [Outcome.RETRY], "not dead-lettered at once"
    assert not letters.letters
