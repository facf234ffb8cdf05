"""Wiring shared by every service's composition root: pool, outbox, inbox, consumer."""

from __future__ import annotations

import contextvars
import signal
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, Producer
from psycopg_pool import ConnectionPool

from saga_runtime.consumer import ConsumerFactory, ConsumerRunner, Handler
from saga_runtime.consumer_health import StatsCallback
from saga_runtime.db import create_pool
from saga_runtime.dead_letters import DeadLetterStore, KafkaDeadLetterPublisher
from saga_runtime.inbox import Inbox
from saga_runtime.kafka import consumer_config, producer_config
from saga_runtime.logs import get_logger
from saga_runtime.naming import consumer_group, dead_letter_topic, events_topic
from saga_runtime.outbox import Outbox
from saga_runtime.settings import ConsumerSettings, DatabaseSettings, KafkaSettings
from saga_runtime.unit_of_work import UnitOfWorkFactory
from saga_runtime.wakeup import RelayWakeup

__all__ = ["ServiceRuntime"]

log = get_logger(__name__)


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
    runner: ConsumerRunner | None = None  # the first of ``runners``
    runners: list[ConsumerRunner] = field(default_factory=list)
    _closers: list[object] = field(default_factory=list)

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
    ) -> ServiceRuntime:
        """Open the pool and, when the service consumes, its Kafka consumers.

        ``subscribes_to`` names the producing services whose events topics this
        service reads. ``consumers`` runners share the consumer group, each on a
        thread of its own: Kafka splits the partitions between them, so one
        order's events (one key, one partition) still go to one of them in order.
        ``side_effecting`` names the event types whose handlers act outside the
        database (mail, webhooks): each such message is applied in a transaction
        of its own, so another message's failure never makes it run again.
        """
        pool = create_pool(
            database,
            role=service,
            name=service,
            max_size=database.pool_max_size + max(0, consumers - 1),
        )
        outbox = Outbox(schema=service, topic=events_topic(service, kafka.topic_prefix))
        wakeup = RelayWakeup(database, schema=service, name=service)
        uow_factory = UnitOfWorkFactory(pool=pool, outbox=outbox, producer=service, wakeup=wakeup)
        runtime = cls(
            service=service, kafka=kafka, pool=pool, outbox=outbox, uow_factory=uow_factory
        )
        runtime._closers.append(wakeup)
        if handlers and subscribes_to:
            settings = consumer or ConsumerSettings()
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
                            )
                        ),
                        uow_factory=uow_factory,
                        inbox=Inbox(schema=service),
                        dead_letters=DeadLetterStore(schema=service),
                        dead_letter_publisher=publisher,
                        settings=settings,
                        side_effecting=side_effecting,
                    )
                )
            runtime.runner = runtime.runners[0]
            runtime._closers.append(publisher)
        return runtime

    def run_consumer(self, *, install_signal_handlers: bool = True) -> None:
        """Consume until SIGTERM/SIGINT; the current message finishes and commits first."""
        if self.runner is None:
            raise RuntimeError(f"service {self.service} has no handlers to consume with")
        if install_signal_handlers and threading.current_thread() is threading.main_thread():

            def on_signal(signum: int, _frame: FrameType | None) -> None:
                log.info("service.stopping", signal=signal.Signals(signum).name)
                self.stop_consumers()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        others = [
            threading.Thread(
                target=contextvars.copy_context().run,
                args=(runner.run,),
                name=f"{self.service}-consumer-{n}",
                daemon=True,
            )
            for n, runner in enumerate(self.runners[1:], start=1)
        ]
        for thread in others:
            thread.start()
        try:
            self.runner.run()
        finally:
            self.stop_consumers()
            for thread in others:
                thread.join(timeout=30)

    def stop_consumers(self) -> None:
        for runner in self.runners:
            runner.stop()

    def run_with_api(self, app: Any, *, host: str, port: int) -> None:
        """Serve ``app`` with uvicorn in this thread and consume in another, until SIGTERM.

        uvicorn owns the signals: on SIGTERM/SIGINT it drains HTTP requests, then
        the consumer finishes its current message and leaves the group.
        """
        import uvicorn

        consumer: threading.Thread | None = None
        if self.runner is not None:
            consumer = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self.run_consumer,),
                kwargs={"install_signal_handlers": False},
                name=f"{self.service}-consumer",
                daemon=True,
            )
            consumer.start()
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        )
        try:
            server.run()
        finally:
            if self.runner is not None and consumer is not None:
                self.stop_consumers()
                consumer.join(timeout=30)

    def close(self) -> None:
        for closer in self._closers:
            close = getattr(closer, "close", None)
            if close is not None:
                close()
        self.pool.close()


def _consumer_factory(config: dict[str, Any]) -> ConsumerFactory:
    """New consumers with ``config``, each reporting its statistics to the given callback."""

    def new_consumer(on_stats: StatsCallback) -> Consumer:
        return Consumer({**config, "stats_cb": on_stats})

    return new_consumer
