"""One service's life, from settings to exit code, for every service alike.

A service's composition root (``<service>/bootstrap.py``, or the ``settings`` and ``compose``
its ``Service`` names) offers ``Settings`` (its settings class) and
``compose(settings) -> Composition``: the dependencies its handlers take, its
HTTP API if it has one, and any extra worker threads. Everything else — logging, the pool,
the consumers with their subscriptions from the system definition, health, signals and
the exit code — is :func:`run_service`'s.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.registry import Collector

from saga_runtime import metrics
from saga_runtime.logs import configure_logging
from saga_runtime.service import ServiceRuntime
from saga_runtime.settings import ServiceSettings
from saga_runtime.system import DefinitionError, System
from saga_runtime.tracing import configure_tracing
from saga_runtime.workers import Worker

__all__ = ["Composition", "CompositionRoot", "build_runtime", "composition_root", "run_service"]


def _no_workers(_runtime: ServiceRuntime) -> Sequence[Worker]:
    return ()


def _no_collectors(_runtime: ServiceRuntime) -> Sequence[Collector]:
    return ()


@dataclass
class Composition:
    """What a composition root gives the runtime.

    ``dependencies`` are injected into the handlers by parameter name. ``api(runtime)``
    returns the ASGI app served on ``settings.host``/``settings.port`` (None: the service
    has no API and serves health on ``settings.health_port``). ``workers(runtime)`` are
    watched threads run beside the consumers; ``collectors(runtime)`` add the service's own
    metrics; ``closers`` run after the runtime closes.
    """

    dependencies: Mapping[str, object] = field(default_factory=dict)
    api: Callable[[ServiceRuntime], Any] | None = None
    workers: Callable[[ServiceRuntime], Sequence[Worker]] = _no_workers
    # Metrics of the service's own (``saga_runtime.metrics_http.QueryGauge``), on /metrics.
    collectors: Callable[[ServiceRuntime], Sequence[Collector]] = _no_collectors
    closers: Sequence[Callable[[], object]] = ()


@dataclass(frozen=True)
class CompositionRoot:
    """A service's ``Settings`` (its settings class) and ``compose(settings)``."""

    Settings: Callable[[], Any]
    compose: Callable[[Any], Composition]


def composition_root(system: System, name: str) -> CompositionRoot:
    """Service ``name``'s composition root: the ``settings`` and ``compose`` its definition
    names, or else those of the module ``<name>.bootstrap`` (checked to offer both)."""
    service = system.service(name)  # an unknown name is a KeyError that lists the known ones
    if service.settings is not None and service.compose is not None:
        return CompositionRoot(Settings=service.settings, compose=service.compose)
    module = importlib.import_module(f"{name}.bootstrap")
    for attribute in ("Settings", "compose"):
        if not hasattr(module, attribute):
            raise DefinitionError(f"{module.__name__} has no {attribute}")
    return CompositionRoot(Settings=module.Settings, compose=module.compose)


def build_runtime(
    system: System,
    name: str,
    settings: ServiceSettings,
    dependencies: Mapping[str, object] | None = None,
) -> ServiceRuntime:
    """The service's runtime: its handlers and effects bound to ``dependencies``, its
    subscriptions and side-effecting handlers as the system definition declares them.
    A service that declares effects gets its effects table and an executor
    (``settings.effects``), run on a watched worker beside the consumers."""
    service = system.service(name)
    return ServiceRuntime.build(
        service=name,
        kafka=settings.kafka,
        database=settings.database,
        consumer=settings.consumer,
        consumers=settings.consumers,
        handlers=service.handlers(dependencies),
        subscribes_to=system.subscriptions(name),
        side_effecting=service.side_effecting,
        emits=[event.event_type for event in service.emits],
        effects=service.effect_kinds(dependencies),
        effect_settings=settings.effects,
        # Each handled event type only from its declared producer's topic (else forged).
        producers={
            event.event_type: producer
            for event in service.handles
            if (producer := system.producer(event)) is not None
        },
    )


def run_service(system: System, name: str, settings: ServiceSettings | None = None) -> int:
    """Run service ``name`` of ``system`` until SIGTERM/SIGINT or a dead worker; the exit code.

    0 after a requested stop, 1 when a worker thread died (the supervisor restarts it).
    """
    root = composition_root(system, name)
    settings = settings if settings is not None else root.Settings()
    configure_logging(settings.log, service=name)
    configure_tracing(name)
    metrics.set_enabled(settings.metrics_enabled)
    composition: Composition = root.compose(settings)
    runtime = build_runtime(system, name, settings, composition.dependencies)
    collectors = list(composition.collectors(runtime))
    for collector in collectors:
        REGISTRY.register(collector)
    try:
        workers = composition.workers(runtime)
        if composition.api is not None:
            host, port = getattr(settings, "host", None), getattr(settings, "port", None)
            if not isinstance(host, str) or not isinstance(port, int):
                raise DefinitionError(f"{name} has an API but its settings lack host and port")
            return runtime.run_with_api(
                composition.api(runtime), host=host, port=port, workers=workers
            )
        return runtime.run_consumer(
            health_host=settings.health_host,
            health_port=settings.health_port,
            metrics_port=settings.metrics_port,
            workers=workers,
        )
    finally:
        for collector in collectors:
            REGISTRY.unregister(collector)
        runtime.close()
        for close in composition.closers:
            close()
