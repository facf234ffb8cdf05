"""Composition root of the relay: one OutboxRelay thread per outbox, one producer each."""

from __future__ import annotations

import threading
from functools import partial

from confluent_kafka import Producer

from outbox_relay.settings import RelayProcessSettings
from saga_runtime import (
    DatabaseProbe,
    Health,
    HealthServer,
    InboxSettings,
    OutboxRelay,
    Worker,
    Workers,
    configure_logging,
    events_topic,
    get_logger,
    metrics,
    producer_config,
    relay_login,
    run_workers,
    verify_inbox_retention,
)
from saga_runtime.health import Probe
from saga_runtime.metrics_http import MetricsServer
from saga_runtime.tracing import configure_tracing
from saga_system import SYSTEM

log = get_logger(__name__)


def build_relays(settings: RelayProcessSettings) -> list[OutboxRelay]:
    return [
        OutboxRelay(
            schema=outbox,
            database=settings.database,
            settings=settings.relay,
            producer_factory=lambda outbox=outbox: Producer(  # type: ignore[misc]
                producer_config(settings.kafka_for(outbox), client_id=f"{settings.name}-{outbox}")
            ),
            name=settings.name,
        )
        for outbox in settings.outboxes
    ]


def health(settings: RelayProcessSettings, relays: list[OutboxRelay], workers: Workers) -> Health:
    """Alive: every outbox thread runs. Ready: the database answers, and every outbox
    thread is either active (holds its outbox's lock) or on standby (polls for it)."""

    def role(relay: OutboxRelay) -> str | None:
        if relay.is_leader or relay.is_standby:
            return None
        return "neither active nor standby (connecting to the database)"

    # The first outbox's login: the process holds no login of its own.
    login = relay_login(settings.outboxes[0])
    ready: dict[str, Probe] = {
        "database": DatabaseProbe(settings.database, role=login, name=settings.name)
    }
    ready.update({f"outbox-{relay.schema}": partial(role, relay) for relay in relays})
    return Health(alive={"workers": workers.problem}, ready=ready)


def main(settings: RelayProcessSettings | None = None) -> int:
    """Relay until SIGTERM/SIGINT; returns the process exit code.

    Each outbox's relay runs on a watched worker thread: one that dies (a bug)
    stops the others and the process exits 1, so its supervisor starts it again
    rather than leaving a process that looks healthy and relays nothing.
    """
    settings = settings or RelayProcessSettings()
    configure_logging(settings.log, service="outbox_relay", relay=settings.name)
    configure_tracing("outbox_relay")
    # The relay purges each outbox's service's inbox: refuse a retention that the replay
    # window of a topic that inbox reads outlasts (asked as the outbox's own principal).
    for outbox in settings.outboxes:
        kafka = settings.kafka_for(outbox)
        verify_inbox_retention(
            kafka,
            [events_topic(p, kafka.topic_prefix) for p in SYSTEM.subscriptions(outbox)],
            InboxSettings().retention,
        )
    metrics.set_enabled(settings.metrics_enabled)
    stop = threading.Event()
    workers = Workers()
    relays = build_relays(settings)
    server: HealthServer | None = None
    if settings.health_port:
        server = HealthServer(
            health(settings, relays, workers),
            host=settings.health_host,
            port=settings.health_port,
        )
    closers = [server.close] if server is not None else []
    if settings.metrics_port:
        closers.append(MetricsServer(host=settings.health_host, port=settings.metrics_port).close)
    log.info("relay.started", outboxes=settings.outboxes)
    return run_workers(
        workers,
        [
            *([server.worker("relay-health")] if server is not None else []),
            *(
                Worker(name=f"relay-{relay.schema}", run=partial(relay.run, stop), stop=stop.set)
                for relay in relays
            ),
        ],
        name="relay",
        join_timeout=10,
        closers=closers,
    )
