"""The choreography as a picture sees it: services, and arrows between them.

One arrow per subscription (producer to consumer) carries the events the consumer handles;
the events that undo a step (the saga's compensations) go on an arrow of their own, drawn
dashed, so the way back reads apart from the way forward. Every renderer draws this model,
so the Mermaid text, the dot text and the picture always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from saga_runtime import Event
from saga_runtime.system import System

__all__ = ["MARKS", "Arrow", "Choreography", "choreography", "legend"]

# How an event's role in the saga is marked in a label (text, so every renderer shows it).
MARKS = {"start": "▶", "final": "■", "undo": "↩"}


@dataclass(frozen=True)
class Arrow:
    """``producer``'s events that ``consumer`` handles; ``undo``: the compensations."""

    producer: str
    consumer: str
    labels: tuple[str, ...]
    undo: bool = False


@dataclass(frozen=True)
class Choreography:
    services: tuple[str, ...]
    starter: str | None  # the service that emits the saga's first event
    arrows: tuple[Arrow, ...]


def choreography(system: System) -> Choreography:
    """The services of ``system`` and one or two arrows per subscription, in declaration
    order (producers, then consumers, then events as the producer declares them)."""
    undoes = {e for undo in system.compensations.values() for e in undo}
    arrows: list[Arrow] = []
    for producer in system.services:
        for consumer in system.services:
            handled = [e for e in producer.emits if e in consumer.handles]
            for undo in (False, True):
                events = [e for e in handled if (e in undoes) is undo]
                if events:
                    labels = tuple(_label(system, e, undoes) for e in events)
                    arrows.append(Arrow(producer.name, consumer.name, labels, undo))
    starter = system.producer(system.start) if system.start is not None else None
    return Choreography(tuple(system.names), starter, tuple(arrows))


def legend() -> str:
    """What the marks mean, in one line."""
    return (
        f"{MARKS['start']} starts the saga · {MARKS['final']} final · "
        f"{MARKS['undo']} compensation (dashed)"
    )


def _label(system: System, event: type[Event], undoes: set[type[Event]]) -> str:
    name = event.event_type
    if event is system.start:
        return f"{MARKS['start']} {name}"
    if event in system.final:
        return f"{MARKS['final']} {name}"
    if event in undoes:
        return f"{MARKS['undo']} {name}"
    return name
