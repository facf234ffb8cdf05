"""A consumer that librdkafka leaves stalled is noticed, and the runner replaces it."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError

from saga_runtime import consumer as consumer_module
from saga_runtime.consumer_health import ConsumerHealth
from tests.unit.fakes import FakeConsumer, FakeMessage
from tests.unit.test_consumer_runner import asked, make_runner

TOPIC = "orders.events"


def stats(state: str = "up", join_state: str = "steady", **fetch: str) -> str:
    """librdkafka statistics, trimmed to what is read: group state and fetch states."""
    partitions: dict[str, Any] = {"-1": {"fetch_state": "none"}}
    partitions.update({p.lstrip("p"): {"fetch_state": f} for p, f in fetch.items()})
    return json.dumps(
        {
            "cgrp": {"state": state, "join_state": join_state},
            "topics": {TOPIC: {"partitions": partitions}},
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_consumer_in_its_group_fetching_what_it_holds_is_fine(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)
    health.on_stats(stats(p0="active", p1="active", p2="stopped"))
    clock.now += 600

    # Partition 2 is not ours: that it is not fetched is no stall.
    assert health.stalled([(TOPIC, 0), (TOPIC, 1)]) is None


def test_out_of_the_group_for_longer_than_the_limit_is_a_stall(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)
    health.on_stats(stats(join_state="wait-join"))
    assert health.stalled([]) is None  # it may just be joining
    clock.now += 59
    assert health.stalled([]) is None
    clock.now += 2

    assert health.stalled([]) == "consumer group state up, join state wait-join"


def test_an_assigned_partition_that_never_fetches_is_a_stall(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)
    health.on_stats(stats(p0="active", p1="offset-query"))
    health.stalled([(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)])
    clock.now += 61

    problem = health.stalled([(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)])

    assert problem == (
        f"assigned partitions not fetching: {TOPIC}[1] offset-query, {TOPIC}[2] unknown"
    )


def test_recovering_in_between_restarts_the_clock(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)
    health.on_stats(stats(join_state="wait-join"))
    clock.now += 50
    health.on_stats(stats(p0="active"))
    assert health.stalled([(TOPIC, 0)]) is None
    health.on_stats(stats(join_state="wait-join"))
    clock.now += 50

    assert health.stalled([(TOPIC, 0)]) is None


def test_without_statistics_nothing_is_judged(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)
    health.on_stats("not json")
    clock.now += 600

    assert health.stalled([(TOPIC, 0)]) is None


class Consumers:
    """Consumer factory: the first consumer is stuck out of its group, later ones work."""

    def __init__(self, messages: list[FakeMessage]) -> None:
        self.made: list[FakeConsumer] = []
        self.messages = messages

    def __call__(self, on_stats: Any) -> FakeConsumer:
        if not self.made:
            consumer = FakeConsumer([], stats=stats(join_state="wait-join"))
        else:
            consumer = FakeConsumer(self.messages, stats=stats(p0="active"), assigned=[(TOPIC, 0)])
        self.made.append(consumer)
        return consumer.factory(on_stats)


def run_until_answered(runner: Any, uow: Any) -> threading.Thread:
    """Run the runner's loop on a thread until it emitted something (or 5 s), then stop it."""
    loop = threading.Thread(target=runner.run)
    loop.start()
    try:
        for _ in range(500):
            if uow.outbox.rows:
                break
            threading.Event().wait(0.01)
    finally:
        runner.stop()
        loop.join(timeout=5)
    return loop


def test_the_runner_replaces_a_stalled_consumer_and_goes_on_with_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_module, "_HEALTH_CHECK_INTERVAL", 0.0)
    consumers = Consumers([FakeMessage(asked(1).to_bytes(), 0)])
    runner, uow, _ = make_runner(consumers, stall_seconds=0.05, poll_timeout=0.01)
    run_until_answered(runner, uow)

    stuck, renewed = consumers.made[0], consumers.made[1]
    assert stuck.closed
    assert renewed.subscribed == ["orders.events"]
    assert [e.event_type for e in uow.outbox.rows] == ["Answered"]
    assert len(consumers.made) == 2  # a consumer that works is kept


def ready(health: ConsumerHealth, assigned: list[tuple[str, int]] | None) -> str | None:
    """What /readyz sees after the consuming thread's periodic check (``stalled``)."""
    if assigned is not None:
        health.stalled(assigned)
    return health.readiness(grace=30)


def test_readiness_waits_for_the_first_statistics_and_a_steady_group(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)
    assert "no statistics" in (ready(health, []) or "")
    health.on_stats(stats(state="wait-coord", join_state="init"))
    assert "state wait-coord" in (ready(health, []) or "")
    health.on_stats(stats(p0="offset-query"))
    assert "not fetching" in (ready(health, [(TOPIC, 0)]) or "")
    health.on_stats(stats(p0="active"))
    assert ready(health, [(TOPIC, 0)]) is None


def test_readiness_holds_through_a_rebalance_shorter_than_the_grace(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)
    health.on_stats(stats(p0="active"))
    assert ready(health, [(TOPIC, 0)]) is None
    # A rebalance: out of steady state, then its new partitions not fetching yet.
    clock.now += 10
    health.on_stats(stats(join_state="wait-assign-call"))
    assert ready(health, []) is None
    clock.now += 10
    health.on_stats(stats(p1="offset-wait"))
    assert ready(health, [(TOPIC, 1)]) is None
    # ...but a problem that lasts longer than the grace is reported.
    clock.now += 25
    assert "not fetching" in (ready(health, [(TOPIC, 1)]) or "")
    health.on_stats(stats(p1="active"))
    assert ready(health, [(TOPIC, 1)]) is None


def test_the_stall_check_keeps_readiness_fresh_between_probes(clock: Clock) -> None:
    """Nobody asked /readyz for a while: the runner's own checks count as sightings."""
    health = ConsumerHealth(stall_after=60, clock=clock)
    health.on_stats(stats(p0="active"))
    for _ in range(20):
        clock.now += 5
        assert health.stalled([(TOPIC, 0)]) is None
    health.on_stats(stats(join_state="wait-join"))
    clock.now += 5
    assert health.readiness(grace=30) is None


def test_a_replaced_consumer_is_not_ready_until_it_has_joined(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)
    health.on_stats(stats(p0="active"))
    assert ready(health, [(TOPIC, 0)]) is None
    health.reset()
    assert ready(health, None) is not None
    health.on_stats(stats(p0="active"))
    assert ready(health, None) == "assignment not read yet"
    assert ready(health, [(TOPIC, 0)]) is None


class _Polled(FakeMessage):
    """What librdkafka's poll gives once a static member is fenced: an error, code _FATAL
    (its ``fatal()`` is False: only the error's code says so)."""

    def error(self) -> KafkaError:  # type: ignore[override]
        return KafkaError(
            KafkaError._FATAL,
            "Fatal error: Broker: Static consumer fenced by other consumer with same"
            " group.instance.id: OffsetCommit failed",
        )


class FencedFirst:
    """Consumer factory: the first consumer is fenced (in its group by its statistics, so
    the stall detection sees nothing wrong); later ones work."""

    def __init__(self, messages: list[FakeMessage]) -> None:
        self.made: list[FakeConsumer] = []
        self.messages = messages

    def __call__(self, on_stats: Any) -> FakeConsumer:
        if not self.made:
            consumer = FakeConsumer([_Polled(None, 7)], stats=stats(p0="active"))
        else:
            consumer = FakeConsumer(self.messages, stats=stats(p0="active"), assigned=[(TOPIC, 0)])
        self.made.append(consumer)
        return consumer.factory(on_stats)


def test_a_consumer_librdkafka_declares_failed_is_replaced_at_once() -> None:
    consumers = FencedFirst([FakeMessage(asked(1).to_bytes(), 0)])
    # Far longer than the test may take: only the fatal error can explain a replacement.
    runner, uow, _ = make_runner(consumers, stall_seconds=600, poll_timeout=0.01)
    loop = run_until_answered(runner, uow)

    assert not loop.is_alive(), "a fatal consumer error must not end the consuming loop"
    fenced, renewed = consumers.made[0], consumers.made[1]
    assert fenced.closed
    assert renewed.subscribed == ["orders.events"]
    assert [e.event_type for e in uow.outbox.rows] == ["Answered"]
    assert len(consumers.made) == 2


def test_a_consumer_fenced_again_and_again_is_replaced_ever_more_slowly(clock: Clock) -> None:
    health = ConsumerHealth(stall_after=60, clock=clock)

    waits = []
    for _ in range(9):
        waits.append(health.fenced())
        clock.now += 1 + waits[-1]
    clock.now += 61  # quiet for longer than stall_after: a new fencing is news again
    waits.append(health.fenced())
    clock.now += 20  # broker restarts 20 s apart are not a shared id: each replaced at once
    waits.append(health.fenced())

    assert waits == [0, 1, 3, 7, 15, 31, 60, 60, 60, 0, 0]
