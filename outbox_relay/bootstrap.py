"""Composition root of the relay: one OutboxRelay thread per outbox, one producer each."""

from __future__ import annotations

import contextvars
import signal
import threading
from types import FrameType

from confluent_kafka import Producer

from outbox_relay.settings import SERVICES, RelayProcessSettings
from saga_runtime import (
    InboxSettings,
    OutboxRelay,
    configure_logging,
    events_topic,
    get_logger,
    producer_config,
    verify_inbox_retention,
)

log = get_logger(__name__)


def build_relays(settings: RelayProcessSettings) -> list[OutboxRelay]:
    return [
        OutboxRelay(
            schema=outbox,
            database=settings.database,
            settings=settings.relay,
            producer_factory=lambda outbox=outbox: Producer(  # type: ignore[misc]
                producer_config(settings.kafka, client_id=f"{settings.name}-{outbox}")
            ),
            name=settings.name,
        )
        for outbox in settings.outboxes
    ]


def main(settings: RelayProcessSettings | None = None) -> int:
    """Relay until SIGTERM/SIGINT; returns the process exit code."""
    settings = settings or RelayProcessSettings()
    configure_logging(settings.log, service="outbox_relay", relay=settings.name)
    # The relay purges the inboxes: refuse a retention the topics' replay window outlasts.
    verify_inbox_retention(
        settings.kafka,
        [events_topic(s, settings.kafka.topic_prefix) for s in SERVICES],
        InboxSettings().retention,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("relay.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [
        # Each thread runs in a copy of this context, so its log lines carry the process's.
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(relay.run, stop),
            name=f"relay-{relay.schema}",
            daemon=True,
        )
        for relay in build_relays(settings)
    ]
    for thread in threads:
        thread.start()
    log.info("relay.started", outboxes=settings.outboxes)
    # A relay thread that died on a bug must not leave the process looking healthy:
    # the whole process exits and its supervisor starts it again.
    while all(thread.is_alive() for thread in threads) and not stop.is_set():
        stop.wait(0.5)
    crashed = not stop.is_set()
    if crashed:
        log.error("relay.thread_died", outboxes=[t.name for t in threads if not t.is_alive()])
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    return 1 if crashed else 0
