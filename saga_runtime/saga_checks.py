"""Checks on the shape of the saga a :class:`~saga_runtime.system.System` declares.

``System.problems`` checks that the definition is consistent (every handled event has a
producer, ...); these check that the saga it describes is sound, from the declared
reactions alone (each reaction names the events it *may* emit):

* it ends: from ``start``, whatever a reaction chooses, a ``final`` event can still follow;
  what follows a final event (the aftermath: compensations, notifications) neither decides
  the outcome a second time nor starts a saga again;
* it undoes what it did: every step another service takes before the outcome is either
  compensated (``compensations``) or declared to change nothing (``no_effect``), and the
  service that took a compensated step reacts to ``cancelled`` with one of its undo events.

In the declared reactions one event fans out to every service that handles it (they all
react), while one reaction picks one of the events it may emit. So a reaction whose every
outcome leads nowhere is a side branch (a notification, a bookkeeping step) while the saga
goes on through another service; a reaction that may pick an outcome after which no final
event can follow, while another of its outcomes leads on, strands the saga: that is the
problem reported, naming the reaction and the stranded outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from saga_runtime.envelope import Event

if TYPE_CHECKING:
    from saga_runtime.system import Reaction, System

__all__ = ["saga_problems"]

EventClass = type[Event]


def saga_problems(system: System) -> list[str]:
    """Everything that makes the declared saga unsound (empty: it ends and undoes its steps).

    A system that declares no ``start`` has no saga to check.
    """
    if system.start is None:
        return []
    if not system.final:
        return [f"the saga starts with {_n(system.start)} but declares no final event"]
    return _ending_problems(system) + _compensation_problems(system)


# --- the saga ends --------------------------------------------------------------------------


def _ending_problems(system: System) -> list[str]:
    assert system.start is not None
    start, final = system.start, set(system.final)
    finals = ", ".join(_n(e) for e in system.final)
    problems: list[str] = []
    live = _live(system)
    if start not in live:
        problems.append(
            f"from {_n(start)} the declared reactions are not sure to reach a final event "
            f"({finals})"
        )
    before = _before_final(system)
    for service, event, react in _reactions(system):
        if event not in before or event in final:
            continue
        stranded = [out for out in react.emits if out not in live]
        if stranded and len(stranded) < len(react.emits):
            for out in stranded:
                problems.append(
                    f"{service}: its reaction to {_n(event)} may emit {_n(out)}, after "
                    f"which no final event ({finals}) can follow"
                )
    for event in system.final:
        after = system.reachable(event) - {event}
        for again in sorted(after & final, key=_n):
            problems.append(
                f"{_n(again)} may follow the final event {_n(event)}: the outcome is decided twice"
            )
        if start in after:
            problems.append(
                f"{_n(start)} may follow the final event {_n(event)}: the aftermath starts "
                "the saga again"
            )
    commands = [e for s in system.services for e in s.commands]
    happens = system.reachable(start, *commands)
    for s in system.services:
        for event in s.emits:
            if event not in happens:
                problems.append(
                    f"{_n(event)} ({s.name}) can never happen: no reaction that follows "
                    f"{_n(start)} may emit it, nor is it a command"
                )
    return problems


def _before_final(system: System) -> set[EventClass]:
    """The events that may happen from ``start`` until the outcome: reachable through the
    declared reactions without passing a final event (the final events included)."""
    if system.start is None:
        return set()
    final = set(system.final)
    seen: set[EventClass] = set()
    todo = [system.start]
    while todo:
        event = todo.pop()
        if event in seen:
            continue
        seen.add(event)
        if event in final:
            continue  # what follows the outcome is the aftermath
        for s in system.services:
            react = s.handles.get(event)
            if react is not None:
                todo.extend(react.emits)
    return seen


def _live(system: System) -> set[EventClass]:
    """The events after which a final event is sure to be reachable: a final event, or one
    that some service reacts to with outcomes that are all live (least fixed point)."""
    live: set[EventClass] = set(system.final)
    grew = True
    while grew:
        grew = False
        for _service, event, react in _reactions(system):
            if event not in live and react.emits and all(out in live for out in react.emits):
                live.add(event)
                grew = True
    return live


# --- the saga undoes what it did ------------------------------------------------------------


def _compensation_problems(system: System) -> list[str]:
    problems: list[str] = []
    cancelled = system.cancelled
    if system.compensations and cancelled is None:
        problems.append("compensations are declared but no cancelled event triggers them")
    starter = system.producer(system.start) if system.start is not None else None
    final = set(system.final)
    no_effect = set(system.no_effect)
    for step in sorted(_before_final(system) - final, key=_n):
        producer = system.producer(step)
        if producer == starter or step in system.compensations or step in no_effect:
            continue
        problems.append(
            f"{_n(step)} ({producer}) is a step before the outcome with no compensation: "
            "declare the events that undo it in compensations, or list it in no_effect if it "
            "changes nothing outside its service"
        )
    for step, undo in system.compensations.items():
        if step in no_effect:
            problems.append(f"{_n(step)} is both compensated and declared to have no effect")
        if not undo:
            problems.append(f"the compensation of {_n(step)} names no event")
            continue
        if cancelled is None:
            continue
        producer = system.producer(step)
        if producer is None:
            continue  # System.problems reports a step that nobody emits
        undoes = " or ".join(_n(e) for e in undo)
        react = system.service(producer).handles.get(cancelled)
        if react is None:
            problems.append(
                f"{_n(step)} is undone by {undoes}, but {producer} does not handle {_n(cancelled)}"
            )
        elif not set(undo) & set(react.emits):
            problems.append(
                f"{_n(step)} is undone by {undoes}, but {producer} reacts to "
                f"{_n(cancelled)} without emitting {undoes}"
            )
    return problems


def _reactions(system: System) -> Iterator[tuple[str, EventClass, Reaction]]:
    for s in system.services:
        for event, react in s.handles.items():
            yield s.name, event, react


def _n(event: EventClass) -> str:
    return event.event_type
