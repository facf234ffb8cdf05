"""Wiring shared by every service's composition root: pool, outbox, inbox, consumers, health."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import Consumer, Producer
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from saga_runtime import tracing
from saga_runtime.consumer import ConsumerFactory, ConsumerRunner, Handler
from saga_runtime.consumer_health import StatsCallback
from saga_runtime.db import create_pool
from saga_runtime.dead_letters import DeadLetterStore, KafkaDeadLetterPublisher
from saga_runtime.effect_executor import EffectExecutor
from saga_runtime.effects import EffectKind, Effects
from saga_runtime.health import DatabaseProbe, Health, HealthServer, Probe, add_health_routes
from saga_runtime.inbox import Inbox
from saga_runtime.kafka import consumer_config, producer_config
from saga_runtime.metrics_http import MetricsServer, OutboxBacklog, add_metrics_routes
from saga_runtime.naming import consumer_group, dead_letter_topic, events_topic
from saga_runtime.outbox import Outbox
from saga_runtime.settings import (
    ConsumerSettings,
    DatabaseSettings,
    EffectSettings,
    KafkaSettings,
)
from saga_runtime.unit_of_work import UnitOfWorkFactory
from saga_runtime.wakeup import RelayWakeup
from saga_runtime.workers import Worker, Workers, run_workers

__all__ = ["ServiceRuntime"]


@dataclass
class ServiceRuntime:
    """The runtime parts of one service, built once in its bootstrap.

    The service's schema, database role, events topic, consumer group and
    dead-letter topic are all named after the service.
    """

    service: str
    kafka: KafkaSettings
    pool: ConnectionPool
    outbox: Outbox
    uow_factory: UnitOfWorkFactory
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    runner: ConsumerRunner | None = None  # the first of ``runners``
    runners: list[ConsumerRunner] = field(default_factory=list)
    ready_grace: float = 30.0
    wakeup: RelayWakeup | None = None
    # The service's effects table and the executor that runs them (None: it has none).
    effects: Effects | None = None
    executor: EffectExecutor | None = None
    _closers: list[object] = field(default_factory=list)
    _workers: Workers | None = None

    @classmethod
    def build(
        cls,
        *,
        service: str,
        kafka: KafkaSettings,
        database: DatabaseSettings,
        consumer: ConsumerSettings | None = None,
        handlers: Mapping[str, Handler] | None = None,
        subscribes_to: Sequence[str] = (),
        consumers: int = 1,
        side_effecting: Collection[str] = (),
        emits: Collection[str] | None = None,
        effects: Sequence[EffectKind] = (),
        effect_settings: EffectSettings | None = None,
        producers: Mapping[str, str] | None = None,
    ) -> ServiceRuntime:
        """Open the pool and, when the service consumes, its Kafka consumers.

        ``subscribes_to`` names the producing services whose events topics this
        service reads. ``consumers`` runners share the consumer group, each on a
        thread of its own: Kafka splits the partitions between them, so one
        order's events (one key, one partition) still go to one of them in order.
        ``side_effecting`` names the event types whose handlers act outside the
        database (mail, webhooks): each such message is applied in a transaction
        of its own, so another message's failure never makes it run again.
        ``emits`` are the only event types the outbox takes (None: any).
        ``effects`` are the kinds of effects the service declares: its units of work
        may then request them, and an executor (``effect_settings``) runs them
        beside the consumers. ``producers`` maps each handled event type to the service
        that emits it: an event read from another topic than that service's is
        dead-lettered as forged (None: no check).
        """
        pool = create_pool(
            database,
            role=service,
            name=service,
            # The executor claims and settles on connections of its own, so that its
            # bookkeeping does not wait behind the consumers' transactions.
            max_size=database.pool_max_size + max(0, consumers - 1) + (2 if effects else 0),
        )
        outbox = Outbox(
            schema=service,
            topic=events_topic(service, kafka.topic_prefix),
            event_types=emits,
        )
        wakeup = RelayWakeup(database, schema=service, name=service)
        store = Effects(schema=service, kinds=effects) if effects else None
        uow_factory = UnitOfWorkFactory(
            pool=pool, outbox=outbox, producer=service, wakeup=wakeup, effects=store
        )
        runtime = cls(
            service=service,
            kafka=kafka,
            pool=pool,
            outbox=outbox,
            uow_factory=uow_factory,
            database=database,
            effects=store,
        )
        if store is not None:
            instance = (consumer or ConsumerSettings()).group_instance_id
            runtime.executor = EffectExecutor(
                effects=store,
                uow_factory=uow_factory,
                settings=effect_settings,
                # One executor per process, which the static consumer id names.
                instance=f"{instance}-{service}" if instance else None,
            )
        runtime.wakeup = wakeup
        runtime._closers.append(wakeup)
        backlog = OutboxBacklog(pool, schema=service)
        REGISTRY.register(backlog)
        runtime._closers.append(partial(REGISTRY.unregister, backlog))
        if handlers and subscribes_to:
            settings = consumer or ConsumerSettings()
            runtime.ready_grace = settings.ready_grace
            group = consumer_group(service, kafka.topic_prefix)
            dlq_config = producer_config(kafka, client_id=f"{service}-dead-letters")
            # A dead letter that cannot be delivered within 30 s fails loudly and
            # the message is retried, rather than queueing for ever.
            dlq_config["message.timeout.ms"] = 30_000
            # Order across dead letters does not matter; no need for the gapless guarantee.
            dlq_config["enable.gapless.guarantee"] = False
            publisher = KafkaDeadLetterPublisher(
                Producer(dlq_config),
                topic=dead_letter_topic(service, kafka.topic_prefix),
                service=service,
            )
            sources = (
                None
                if producers is None
                else {t: events_topic(p, kafka.topic_prefix) for t, p in producers.items()}
            )
            for n in range(consumers):
                runtime.runners.append(
                    ConsumerRunner(
                        service=service,
                        topics=[events_topic(name, kafka.topic_prefix) for name in subscribes_to],
                        handlers=handlers,
                        consumer=_consumer_factory(
                            consumer_config(
                                kafka,
                                group_id=group,
                                client_id=service if n == 0 else f"{service}-{n}",
                                session_timeout_ms=settings.session_timeout_ms,
                                max_poll_interval_ms=settings.max_poll_interval_ms,
                                commit_interval_ms=settings.commit_interval_ms,
                                group_instance_id=(
                                    f"{settings.group_instance_id}-{service}-{n}"
                                    if settings.group_instance_id
                                    else None
                                ),
                            )
                        ),
                        uow_factory=uow_factory,
                        inbox=Inbox(schema=service),
                        dead_letters=DeadLetterStore(schema=service),
                        dead_letter_publisher=publisher,
                        settings=settings,
                        side_effecting=side_effecting,
                        sources=sources,
                    )
                )
            runtime.runner = runtime.runners[0]
            runtime._closers.append(publisher)
        return runtime

    def health(self, workers: Workers) -> Health:
        """Alive: every worker thread runs. Ready: the database answers, every consumer is
        in its group and fetching (see ``ConsumerHealth.readiness`` for the grace rule)."""
        database = DatabaseProbe(self.database, role=self.service, name=self.service)
        self._closers.append(database)
        ready: dict[str, Probe] = {"database": database}
        for n, runner in enumerate(self.runners):
            ready[f"consumer-{n}"] = partial(runner.readiness, grace=self.ready_grace)
        # The wakeup thread is best effort (a lost wakeup costs one relay polling
        # interval), so it is not a worker; a dead one still makes the process unhealthy.
        alive: dict[str, Probe] = {"workers": workers.problem}
        if self.wakeup is not None:
            alive["wakeup"] = self.wakeup.problem
        return Health(alive=alive, ready=ready)

    def run_consumer(
        self,
        *,
        install_signal_handlers: bool = True,
        workers: Sequence[Worker] = (),
        health_host: str = "127.0.0.1",
        health_port: int = 0,
        metrics_port: int = 0,
    ) -> int:
        """Consume until SIGTERM/SIGINT, or until a worker thread dies; the exit code.

        Every consumer runs on a watched worker thread (``saga_runtime.workers``),
        with ``workers`` beside them and, when ``health_port`` is set, ``/healthz``
        and ``/readyz`` on that port. On SIGTERM the current messages finish and
        commit and the consumers leave the group (0). A worker that raises or
        returns unasked stops all the others the same way, and the exit code is
        1, so the supervisor starts the service again. ``metrics_port`` (0: none) serves
        Prometheus's ``/metrics`` on ``health_host``.
        """
        if self.runner is None:
            raise RuntimeError(f"service {self.service} has no handlers to consume with")
        watched = self._watch()
        server: HealthServer | None = None
        if health_port:
            server = HealthServer(self.health(watched), host=health_host, port=health_port)
        closers = [server.close] if server is not None else []
        if metrics_port:
            closers.append(MetricsServer(host=health_host, port=metrics_port).close)
        return run_workers(
            watched,
            [
                *([server.worker(f"{self.service}-health")] if server is not None else []),
                *self._consumers(watched),
                *workers,
            ],
            name="service",
            on_signal=self.stop_consumers,
            install_signal_handlers=install_signal_handlers,
            closers=closers,
        )

    def stop_consumers(self) -> None:
        """Stop every consumer and worker (signal-safe); ``run_*`` then return."""
        for runner in self.runners:
            runner.stop()
        if self._workers is not None:
            self._workers.stop()

    def run_with_api(
        self, app: Any, *, host: str, port: int, workers: Sequence[Worker] = ()
    ) -> int:
        """Serve ``app`` with uvicorn in this thread, consume on worker threads; the exit code.

        ``app`` also gets ``/healthz``, ``/readyz`` and ``/metrics``. uvicorn owns the signals: on
        SIGTERM/SIGINT it drains HTTP requests, then the consumers finish their
        current messages and leave the group (0). A worker thread that dies stops
        uvicorn the same way and the exit code is 1, so the supervisor restarts the
        service instead of leaving an API up whose consumers have stopped.
        """
        import uvicorn

        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=10,
            )
        )

        def on_failure(_name: str) -> None:
            server.should_exit = True  # uvicorn's own graceful exit, checked by its loop

        watched = self._watch(on_failure=on_failure)
        add_health_routes(app, self.health(watched))
        tracing.trace_requests(app)
        add_metrics_routes(app, service=self.service)
        # uvicorn takes SIGTERM/SIGINT while it serves, then puts these back and raises
        # the signal again: without them that second SIGTERM would kill the process
        # before the consumers finish their messages and leave the group.
        return run_workers(
            watched,
            [*self._consumers(watched), *workers],
            name="service",
            on_signal=self.stop_consumers,
            wait=server.run,
        )

    def _watch(self, *, on_failure: Callable[[str], None] | None = None) -> Workers:
        self._workers = Workers(on_failure=on_failure)
        return self._workers

    def _consumers(self, watched: Workers) -> list[Worker]:
        """A watched worker per consumer runner (one stopped on purpose stops them all), and
        the effect executor's when the service has effects."""
        found = [
            Worker(
                name=f"{self.service}-consumer-{n}",
                run=partial(_consume, runner, watched),
                stop=runner.stop,
            )
            for n, runner in enumerate(self.runners)
        ]
        if self.executor is not None:
            # Watched like a consumer: an executor that dies takes the process down,
            # rather than leaving effects nobody runs.
            found.append(self.executor.worker())
        return found

    def close(self) -> None:
        for closer in self._closers:
            close = getattr(closer, "close", None)
            if close is not None:
                close()
            elif callable(closer):
                closer()
        self.pool.close()


def _consume(runner: ConsumerRunner, watched: Workers) -> None:
    runner.run()
    if runner.stopping:
        # Stopped on purpose (SIGTERM, or a caller that owns the runner): the
        # whole runtime stops with it, and that is no failure.
        watched.stop()


def _consumer_factory(config: dict[str, Any]) -> ConsumerFactory:
    """New consumers with ``config``, each reporting its statistics to the given callback."""

    def new_consumer(on_stats: StatsCallback) -> Consumer:
        return Consumer({**config, "stats_cb": on_stats})

    return new_consumer
