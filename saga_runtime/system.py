"""The declared system: which service emits which events and reacts to which, written once.

In the spirit of the ``System`` of the eventsourcing library: one definition names every
service, the event classes it emits and, per event class it handles, the reaction (handler
and the events that reaction may emit). Subscriptions, topics, consumer groups, the relay's
outboxes, the runnable services, the operator's and the harness's maps and the diagram all
derive from it; :meth:`System.problems` checks it, and a definition with a problem refuses
to build, so a typo is an error at start-up rather than an event silently ignored.
:meth:`System.saga_problems` checks the saga it describes (it ends, it undoes its steps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from saga_runtime.binding import DefinitionError, bind
from saga_runtime.effect_declarations import EffectDeclaration, effect_kinds, effect_problems
from saga_runtime.effects import EffectKind
from saga_runtime.envelope import Event
from saga_runtime.naming import consumer_group, dead_letter_topic, events_topic
from saga_runtime.saga_checks import saga_problems

__all__ = ["DefinitionError", "Reaction", "Service", "System", "reaction"]

Handler = Callable[..., None]
EventClass = type[Event]


@dataclass(frozen=True)
class Reaction:
    """What a service does with one event class.

    ``handler(uow, envelope, **dependencies)`` applies it; ``emits`` are the event classes
    it may emit (the handler contract test holds the handler to them). ``side_effecting``
    marks a handler that acts outside the database (mail, webhooks): each such message gets
    a transaction of its own, so another message's failure never makes it run again.
    """

    handler: Handler
    emits: tuple[EventClass, ...] = ()
    side_effecting: bool = False


def reaction(handler: Handler, *emits: EventClass, side_effecting: bool = False) -> Reaction:
    """Shorthand: ``reaction(on_thing_requested, ThingDone, ThingRefused)``."""
    return Reaction(handler=handler, emits=tuple(emits), side_effecting=side_effecting)


@dataclass(frozen=True)
class Service:
    """One service: its name (schema, topic, consumer group), events, reactions and effects.

    ``commands`` are the events the service emits on its own initiative (an API call, a
    timer) rather than in reaction to an event. ``effects`` are the kinds of calls to the
    outside world its handlers may request (``effect(...)`` per kind name), made by an
    executor in its process (see ``saga_runtime.effects``). ``settings`` and ``compose`` are its
    composition root: ``compose(settings)`` returns the ``Composition`` that
    ``run_service`` runs (dependencies for the handlers, an HTTP API, extra workers).
    """

    name: str
    emits: tuple[EventClass, ...] = ()
    handles: Mapping[EventClass, Reaction] = field(default_factory=dict)
    commands: tuple[EventClass, ...] = ()
    settings: Callable[[], Any] | None = None
    compose: Callable[[Any], Any] | None = None
    effects: Mapping[str, EffectDeclaration] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "emits", tuple(self.emits))
        object.__setattr__(self, "commands", tuple(self.commands))
        object.__setattr__(self, "handles", MappingProxyType(dict(self.handles)))
        object.__setattr__(self, "effects", MappingProxyType(dict(self.effects)))

    @property
    def handled_types(self) -> list[str]:
        return [event.event_type for event in self.handles]

    @property
    def side_effecting(self) -> list[str]:
        return [event.event_type for event, r in self.handles.items() if r.side_effecting]

    def handlers(self, dependencies: Mapping[str, object] | None = None) -> dict[str, Handler]:
        """Every handler keyed by event type, its keyword-only parameters bound by name.

        Dependency injection by parameter name, as in cosmicpython's bootstrap: a handler
        ``on_x(uow, event, *, provider)`` gets ``dependencies["provider"]``. A parameter
        that no dependency fills is an error now, not a ``TypeError`` per message later.
        """
        given = dict(dependencies or {})
        return {
            event.event_type: bind(
                react.handler, given, what=f"{self.name}: the handler of {event.event_type}"
            )
            for event, react in self.handles.items()
        }

    def effect_kinds(self, dependencies: Mapping[str, object] | None = None) -> list[EffectKind]:
        """Every declared effect kind, its call and decision bound to ``dependencies`` by
        keyword-only parameter name, as ``handlers`` binds handlers."""
        return effect_kinds(self.name, self.effects, dict(dependencies or {}))


@dataclass(frozen=True)
class System:
    """Every service of the system and the shape of its saga.

    ``start`` is the event that starts a saga; ``final`` the events after which its outcome
    is decided. ``compensations`` maps each step that has an effect to the events that undo
    it after ``cancelled``; ``no_effect`` lists the steps that change nothing outside their
    service (failures). ``terminal`` lists emitted events that no service needs to handle.
    """

    services: tuple[Service, ...]
    start: EventClass | None = None
    final: tuple[EventClass, ...] = ()
    cancelled: EventClass | None = None
    compensations: Mapping[EventClass, tuple[EventClass, ...]] = field(default_factory=dict)
    no_effect: tuple[EventClass, ...] = ()
    terminal: tuple[EventClass, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "services", tuple(self.services))
        problems = self.problems()
        if problems:
            raise DefinitionError(
                "the system definition is inconsistent:\n  - " + "\n  - ".join(problems)
            )

    # --- lookups ----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Every service's name, in declaration order."""
        return [s.name for s in self.services]

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services)

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(f"no service {name!r} (one of: {', '.join(self.names)})")

    def with_service(self, service: Service, *, terminal: Iterable[EventClass] = ()) -> System:
        """This system and one service more (checked like any definition); ``terminal``
        names the new service's events that no service needs to handle."""
        return System(
            services=(*self.services, service),
            start=self.start,
            final=self.final,
            cancelled=self.cancelled,
            compensations=self.compensations,
            no_effect=self.no_effect,
            terminal=(*self.terminal, *terminal),
        )

    def events(self) -> dict[str, EventClass]:
        """Every emitted event class by its type name."""
        return {e.event_type: e for s in self.services for e in s.emits}

    def producer(self, event: EventClass | str) -> str | None:
        """The service that emits ``event`` (None: nobody)."""
        name = event if isinstance(event, str) else event.event_type
        for s in self.services:
            if any(e.event_type == name for e in s.emits):
                return s.name
        return None

    def subscriptions(self, service: str) -> list[str]:
        """The producers whose events topics ``service`` reads, in declaration order."""
        wanted = {self.producer(e) for e in self.service(service).handles}
        return [s.name for s in self.services if s.name in wanted]

    def subscribers(self, producer: str) -> list[str]:
        """The services that read ``producer``'s events topic."""
        return [s.name for s in self.services if producer in self.subscriptions(s.name)]

    def consumers(self) -> list[str]:
        """The services that consume at all (have a consumer group)."""
        return [s.name for s in self.services if s.handles]

    def events_topics(self, prefix: str = "") -> list[str]:
        return [events_topic(s.name, prefix) for s in self.services]

    def dead_letter_topics(self, prefix: str = "") -> list[str]:
        return [dead_letter_topic(s.name, prefix) for s in self.services if s.handles]

    def topics(self, prefix: str = "") -> list[str]:
        """Every topic the system uses: events topics, then dead-letter topics."""
        return self.events_topics(prefix) + self.dead_letter_topics(prefix)

    def consumer_groups(self, prefix: str = "") -> dict[str, str]:
        return {s.name: consumer_group(s.name, prefix) for s in self.services if s.handles}

    def outboxes(self) -> list[str]:
        """The outbox schemas the relay publishes: every service that emits."""
        return [s.name for s in self.services if s.emits]

    def edges(self) -> Iterator[tuple[str, EventClass, str, Reaction]]:
        """(producer, event, consumer, reaction) for every subscription of the choreography."""
        for consumer in self.services:
            for event, react in consumer.handles.items():
                producer = self.producer(event)
                if producer is not None:
                    yield producer, event, consumer.name, react

    # --- checks -----------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Everything structurally wrong with the definition (empty: consistent)."""
        problems: list[str] = []
        problems += _duplicates("service", [s.name for s in self.services])
        problems += _duplicates(
            "event type emitted by more than one service",
            [e.event_type for s in self.services for e in s.emits],
        )
        emitted = {e for s in self.services for e in s.emits}
        for s in self.services:
            problems += _bad_name(s.name)
            for event in (*s.emits, *s.handles):
                if not (isinstance(event, type) and issubclass(event, Event)):
                    problems.append(f"{s.name}: {event!r} is not an Event class")
            for event, react in s.handles.items():
                if not isinstance(react, Reaction):
                    problems.append(f"{s.name}: the reaction to {event!r} is not a Reaction")
                    continue
                if event not in emitted:
                    problems.append(f"{s.name} handles {_n(event)}, which no service emits")
                for out in react.emits:
                    if out not in s.emits:
                        problems.append(
                            f"{s.name}: its reaction to {_n(event)} emits {_n(out)}, "
                            f"which is not among {s.name}'s events"
                        )
            for out in s.commands:
                if out not in s.emits:
                    problems.append(f"{s.name}: command event {_n(out)} is not among its events")
            problems += effect_problems(s.name, s.effects, s.emits)
        handled = {e for s in self.services for e in s.handles}
        for event in emitted - handled - set(self.terminal):
            problems.append(f"{_n(event)} is emitted but no service handles it (nor is terminal)")
        named: list[EventClass | None] = [self.start, self.cancelled, *self.final]
        for named_event in [*named, *self.compensations]:
            if named_event is not None and named_event not in emitted:
                problems.append(f"{_n(named_event)} is named by the saga but no service emits it")
        return problems

    def saga_problems(self) -> list[str]:
        """Everything unsound in the declared saga (empty: sound): every path from ``start``
        reaches a final event, and every step with an effect is undone on ``cancelled``.
        See :mod:`saga_runtime.saga_checks`; not run when the system is built."""
        return saga_problems(self)

    def reachable(self, *starts: EventClass) -> set[EventClass]:
        """Every event that may follow ``starts`` through the declared reactions."""
        seen: set[EventClass] = set()
        todo = list(starts)
        while todo:
            event = todo.pop()
            if event in seen:
                continue
            seen.add(event)
            for s in self.services:
                react = s.handles.get(event)
                if react is not None:
                    todo.extend(react.emits)
        return seen


def _n(event: Any) -> str:
    return getattr(event, "event_type", repr(event))


def _duplicates(what: str, names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    twice: list[str] = []
    for name in names:
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    return [f"duplicate {what}: {name}" for name in twice]


def _bad_name(name: str) -> list[str]:
    from saga_runtime.naming import validate_service_name

    try:
        validate_service_name(name)
    except ValueError as exc:
        return [str(exc)]
    return []
