"""The consumer runner: applies each event exactly once in effect, or dead-letters it.

The runner is the Kafka side (the loop, batches, offsets, rewinds, waits);
``consumer_apply`` judges and applies messages, ``consumer_retry`` holds the
retry policy and ``consumer_dead_letter`` the dead-letter path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from saga_runtime import metrics
from saga_runtime.backoff import Backoff
from saga_runtime.consumer_apply import Alone, Handler, MessageApplier, OneByOne, Outcome
from saga_runtime.consumer_dead_letter import DeadLettering
from saga_runtime.consumer_health import ConsumerHealth, StatsCallback
from saga_runtime.consumer_messages import header, position
from saga_runtime.consumer_retry import TRANSIENT, RetryBudget
from saga_runtime.dead_letters import DeadLetterPublisher, DeadLetterStore
from saga_runtime.envelope import HEADER_EVENT_TYPE
from saga_runtime.faults import crash_point
from saga_runtime.inbox import Inbox
from saga_runtime.logs import get_logger
from saga_runtime.settings import ConsumerSettings
from saga_runtime.unit_of_work import UnitOfWorkFactory

__all__ = ["ConsumerRunner", "Handler", "Outcome"]

log = get_logger(__name__)


class KafkaConsumer(Protocol):
    """The part of confluent_kafka.Consumer the runner uses (fakes implement it in unit tests)."""

    def subscribe(self, topics: list[str]) -> None: ...
    def poll(self, timeout: float) -> Message | None: ...
    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...
    def store_offsets(self, message: Message) -> None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def close(self) -> None: ...


ConsumerFactory = Callable[[StatsCallback], KafkaConsumer]
"""Makes a new Kafka consumer that reports its librdkafka statistics to the callback."""

_HEALTH_CHECK_INTERVAL = 5.0

# Share of max.poll.interval.ms the runner may spend between two polls (on one
# fetched batch, retry waits included) before it goes back to poll: the rest is
# margin for the one handler call that was running when the share ran out.
_POLL_INTERVAL_SHARE = 0.5


class ConsumerRunner:
    """Polls the service's topics and applies each message exactly once in effect.

    Per message: record the event id in the inbox, run the handler (state
    change plus outbox rows), commit; only then store the offset. A redelivered
    event finds its id in the inbox and has no effect. Transient failures
    (database or broker unavailable) rewind to the message and retry it with
    backoff, for as long as it takes; poison goes to the dead letters and the
    partition moves on.

    Messages already fetched are applied together, up to ``batch_size`` of
    them in one transaction: each has its own inbox record and its own
    handler call, and they commit (or roll back) together, which saves a
    commit per message. If any of them fails, the transaction is rolled back
    and the batch is applied again one message per transaction, so a bad
    message is retried or dead-lettered on its own, exactly as without
    batching.

    Handlers of the event types in ``side_effecting`` act on the outside
    world (send a message, call a remote API) where a rollback cannot undo them: such
    a message is applied in a transaction of its own, after what came before
    it in the batch committed, so no other message's failure can roll it back
    and have it run (and send) again.

    A handler's ``RetryableError`` (a dependency is down) is retried with
    backoff up to ``retry_backoff_max`` for ``retry_for`` from its first
    failure (and at most ``max_attempts`` times, if set); only then is the
    message dead-lettered. Between attempts the runner goes back to poll, so
    it stays in its group however long the outage lasts.

    The runner never spends more than half of ``max_poll_interval_ms``
    between two polls on purpose: once a fetched batch has taken that long,
    it commits what is done, rewinds the rest (it comes again) and polls;
    retry waits are cut short at the same limit. Otherwise slow handlers (an
    outside service taking seconds) could get the consumer evicted from
    its group and its uncommitted work redone by another member.

    A consumer that librdkafka leaves out of its group, or not fetching a
    partition it was assigned, for ``stall_seconds`` is replaced by a new one,
    and one librdkafka declares failed (a fenced static member) at once (see
    ``consumer_health``).

    ``sources`` maps each event type to the only topic it may come from (its
    declared producer's): read from any other, it is forged and dead-lettered.
    """

    def __init__(
        self,
        *,
        service: str,
        topics: Sequence[str],
        handlers: Mapping[str, Handler],
        consumer: ConsumerFactory,
        uow_factory: UnitOfWorkFactory,
        inbox: Inbox,
        dead_letters: DeadLetterStore,
        dead_letter_publisher: DeadLetterPublisher,
        settings: ConsumerSettings,
        side_effecting: Collection[str] = (),
        sources: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.topics = list(topics)
        self.handlers = dict(handlers)
        unknown = set(side_effecting) - set(self.handlers)
        if unknown:
            raise ValueError(f"side-effecting event types without a handler: {sorted(unknown)}")
        self.side_effecting = frozenset(side_effecting)
        self._clock = clock
        self._new_consumer = consumer
        self._lagging: list[tuple[str, int]] = []  # partitions whose lag gauge we set
        self._rebalances = 0  # librdkafka's rebalance count, as last seen
        self._health = ConsumerHealth(stall_after=settings.stall_seconds, on_stats=self._on_stats)
        self._consumer = consumer(self._health.on_stats)
        self._next_health_check = 0.0
        self._failed: str | None = None  # a fatal Kafka error polled: replace the consumer
        self._settings = settings
        self._stopping = threading.Event()
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._poll_budget = settings.max_poll_interval_ms / 1000 * _POLL_INTERVAL_SHARE
        self._polled_at = clock()
        self._retries = RetryBudget(settings, poll_budget=self._poll_budget, clock=clock)
        self._dead_lettering = DeadLettering(
            uow_factory=uow_factory, store=dead_letters, publisher=dead_letter_publisher
        )
        self._applier = MessageApplier(
            handlers={
                event_type: metrics.timed_handler(service, event_type, handler)
                for event_type, handler in self.handlers.items()
            },
            side_effecting=self.side_effecting,
            uow_factory=uow_factory,
            inbox=inbox,
            retries=self._retries,
            dead_lettering=self._dead_lettering,
            settings=settings,
            stopping=self._stopping,
            clock=clock,
            sources=sources,
        )

    def stop(self) -> None:
        """Ask the loop to finish the current message and leave the group (signal-safe)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def readiness(self, *, grace: float) -> str | None:
        """Why this runner is not ready (None: in its group and fetching), for ``/readyz``.

        Safe from any thread: it reads what the consuming thread last recorded
        (``ConsumerHealth.readiness`` has the rule).
        """
        if self._stopping.is_set():
            return "stopping"
        return self._health.readiness(grace=grace)

    def run(self) -> None:
        """Consume until ``stop``; then commit stored offsets and leave the group cleanly."""
        self._consumer.subscribe(self.topics)
        log.info("consumer.started", topics=self.topics)
        try:
            while not self._stopping.is_set():
                msg = self._consumer.poll(self._settings.poll_timeout)
                self._check_health()
                if msg is None:
                    continue
                crash_point("consumer.polled")
                batch = [msg]
                if self._settings.batch_size > 1:
                    # Whatever else is already fetched; never waits for more.
                    batch += self._consumer.consume(self._settings.batch_size - 1, 0)
                started = self._clock()
                outcomes = self.process_batch(batch)
                self._count(batch, outcomes, self._clock() - started)
                if self._failed is not None:
                    self._replace_failed()
        finally:
            self._consumer.close()
            log.info("consumer.stopped")

    def _count(
        self, batch: Sequence[Message], outcomes: Sequence[Outcome | None], seconds: float
    ) -> None:
        """The batch's metrics: ``outcomes`` are those of its messages without a Kafka error,
        in order (a prefix of them, when the rest was rewound)."""
        if not metrics.enabled():
            return
        types = [
            event_type
            if (event_type := header(msg, HEADER_EVENT_TYPE)) in self.handlers
            else "other"
            for msg in batch
            if msg.error() is None
        ]
        metrics.consumer_batch(
            self.service, types, [o.value if o is not None else None for o in outcomes], seconds
        )

    def _on_stats(self, stats: dict[str, Any]) -> None:
        lags = metrics.lags_from_stats(stats)
        metrics.consumer_lag(self.service, lags, self._lagging)
        self._lagging = list(lags)
        cgrp = stats.get("cgrp")
        rebalances = cgrp.get("rebalance_cnt") if isinstance(cgrp, dict) else None
        if isinstance(rebalances, int):
            # librdkafka's count is per consumer: a renewed one starts again from 0.
            metrics.consumer_rebalanced(
                self.service,
                rebalances - self._rebalances if rebalances >= self._rebalances else rebalances,
            )
            self._rebalances = rebalances

    def _check_health(self) -> None:
        now = time.monotonic()
        if now < self._next_health_check:
            return
        self._next_health_check = now + _HEALTH_CHECK_INTERVAL
        try:
            assigned = [(tp.topic, tp.partition) for tp in self._consumer.assignment()]
        except KafkaException:
            return
        problem = self._health.stalled(assigned)
        if problem is None:
            return
        log.warning("consumer.stalled", problem=problem, after_seconds=self._settings.stall_seconds)
        self.renew_consumer()

    def renew_consumer(self) -> None:
        """Swap the Kafka consumer for a new one, which joins the group again.

        Only between batches: every message polled so far is applied and its
        offset stored. The old consumer is closed on a thread of its own (its
        stored offsets are committed if it can), so a consumer that cannot even
        close does not hold this one up; what it fails to commit comes again.
        """
        old = self._consumer
        closing = threading.Thread(
            target=old.close, name=f"{self.service}-consumer-close", daemon=True
        )
        closing.start()
        closing.join(timeout=self._settings.session_timeout_ms / 1000)
        if closing.is_alive():
            log.warning("consumer.close_timed_out")
        self._health.reset()
        metrics.consumer_renewed(self.service)
        self._rebalances = 0  # the new consumer counts from 0
        self._consumer = self._new_consumer(self._health.on_stats)
        self._consumer.subscribe(self.topics)
        log.info("consumer.renewed", topics=self.topics)

    def _replace_failed(self) -> None:
        """Replace a consumer librdkafka declared failed (a fenced static member)."""
        error, self._failed = self._failed, None
        if self._stopping.is_set():
            return  # the loop closes it now: a new member would only be closed at once
        delay = self._health.fenced()
        if delay:
            self._health.reset()  # not ready while it waits: nothing polls meanwhile
            log.error(
                "consumer.failed_again",
                error=error,
                replaced_in_seconds=delay,
                hint="another live consumer may use this group.instance.id: ids must differ"
                " between processes (CONSUMER_GROUP_INSTANCE_ID)",
            )
            if self._stopping.wait(delay):
                return
        else:
            log.warning("consumer.failed", error=error)
        self.renew_consumer()

    def process_batch(self, msgs: Sequence[Message]) -> list[Outcome | None]:
        """Handle polled messages in one transaction if they all go through, else one by one.

        Called right after a poll: the poll-interval budget starts now. What is
        left when it runs out is rewound, has no outcome in the list, and comes again.
        """
        self._polled_at = self._clock()
        live: list[Message] = []
        for msg in msgs:
            error = msg.error()
            if error is not None:
                self._on_kafka_error(error)
            else:
                live.append(msg)
        results: list[Outcome | None] = []
        while live:
            if len(live) == 1:
                return [*results, self.process(live[0])]
            try:
                outcomes = self._applier.apply_batch(live)
            except TRANSIENT as exc:
                log.warning("batch.retry_transient", messages=len(live), error=repr(exc))
                self._rewind(*live)
                self._wait(self._backoff.next_delay())
                return [*results, *[Outcome.RETRY] * len(live)]
            except OneByOne:
                return [*results, *self._one_by_one(live)]
            except Alone:
                # Its own transaction, retries and dead letter, exactly as a message
                # polled alone: nothing else is in its transaction to fail it.
                outcome = self.process(live[0])
                results.append(outcome)
                if outcome is Outcome.RETRY:
                    # Every partition back to its first message not applied, this one's
                    # included: rewinding only what follows it would seek its own
                    # partition past it, and the next stored offset would skip it.
                    self._rewind(*live)
                    return results
                live = live[1:]
                if live and (self._stopping.is_set() or self._poll_budget_spent()):
                    self._back_to_poll(live)
                    break
                continue
            if not outcomes:  # never expected; a loop that makes no progress would spin
                return [*results, *self._one_by_one(live)]
            self._backoff.reset()
            for msg in live[: len(outcomes)]:
                self._retries.forget(msg)
                self._store(msg)
            results += outcomes
            live = live[len(outcomes) :]
            if live and (self._stopping.is_set() or self._poll_budget_spent()):
                self._back_to_poll(live)
                break
        return results

    def _poll_budget_spent(self) -> bool:
        return self._clock() - self._polled_at >= self._poll_budget

    def _back_to_poll(self, rest: Sequence[Message]) -> None:
        """Leave ``rest`` for later: they come again, to us or to the next owner."""
        if not self._stopping.is_set():
            log.info("batch.back_to_poll", left=len(rest), after_seconds=self._poll_budget)
        self._rewind(*rest)

    def _wait(self, delay: float) -> None:
        """Wait between attempts, but never past the poll-interval budget (nor a stop)."""
        remaining = self._polled_at + self._poll_budget - self._clock()
        self._stopping.wait(max(0.0, min(delay, remaining)))

    def _one_by_one(self, msgs: Sequence[Message]) -> list[Outcome | None]:
        outcomes: list[Outcome | None] = []
        for n, msg in enumerate(msgs):
            outcome = self.process(msg)
            outcomes.append(outcome)
            if outcome is Outcome.RETRY:
                # Neither this message's partition nor the others may run ahead of
                # what was applied: every partition goes back to its first message
                # not yet applied (this one included).
                self._rewind(*msgs[n:])
                break
            if n + 1 < len(msgs) and (self._stopping.is_set() or self._poll_budget_spent()):
                self._back_to_poll(msgs[n + 1 :])
                break
        return outcomes

    def _store(self, msg: Message) -> None:
        try:
            self._consumer.store_offsets(message=msg)
        except KafkaException as exc:
            # The partition was revoked meanwhile; its new owner will see the
            # message again and the inbox makes that harmless.
            log.warning("consumer.store_offset_failed", error=str(exc))

    def process(self, msg: Message) -> Outcome | None:
        """Handle one polled message, then store its offset or rewind to it."""
        error = msg.error()
        if error is not None:
            self._on_kafka_error(error)
            return None
        outcome = self.handle(msg)
        if outcome is Outcome.RETRY:
            self._rewind(msg)
            retrying = self._retries.get(msg)
            if retrying is not None and retrying.attempts:
                self._wait(self._retries.delay(retrying.attempts))
            else:
                self._wait(self._backoff.next_delay())
            return outcome
        self._backoff.reset()
        self._retries.forget(msg)
        self._store(msg)
        return outcome

    def handle(self, msg: Message) -> Outcome:
        """Apply one message in one transaction; never raises for a bad message.

        Judged by the same rule as in a batch: a message whose ``event_type``
        header names a type this service does not handle is skipped unparsed, and
        one whose header and body disagree is poison.
        """
        return self._applier.handle(msg)

    def _rewind(self, *msgs: Message) -> None:
        """Seek each partition back to the first of ``msgs`` on it (they come again)."""
        first: dict[tuple[str, int], int] = {}
        for msg in msgs:
            topic, partition, offset = position(msg)
            first[(topic, partition)] = min(offset, first.get((topic, partition), offset))
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                log.warning("consumer.seek_failed", error=str(exc))

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal() or error.code() == KafkaError._FATAL:
            # This consumer will never fetch again (see ``consumer_health``): the loop
            # replaces it once the batch is done. (A fatal error polled as a message has
            # code _FATAL; its ``fatal()`` is False.)
            self._failed = str(error)
            return
        # Broker down, topic not created yet...: librdkafka recovers by itself.
        log.warning("consumer.kafka_error", error=str(error))
