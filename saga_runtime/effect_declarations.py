"""Effects declared in the system definition, beside a service's reactions.

``Service(effects={"charge": effect(charge, on_charged, emits=(ChargeSucceeded, ...))})``:
per kind of effect, the call to make and the decision about its outcome, each given
its dependencies by keyword-only parameter name like a handler. ``run_service``
turns the declarations into the ``EffectKind``s of the service's executor.

A deadline or retry policy that an operator tunes is named rather than given:
``effect(..., deadline="charge_deadline", retry="charge_retry")`` takes them from the
dependencies of the same names, which the composition root sets from its settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from saga_runtime.binding import DefinitionError, bind
from saga_runtime.effect_retry import RetryPolicy
from saga_runtime.effects import EffectKind
from saga_runtime.envelope import Event

__all__ = ["EffectDeclaration", "effect", "effect_kinds", "effect_problems"]

EventClass = type[Event]
T = TypeVar("T")


@dataclass(frozen=True)
class EffectDeclaration:
    """One kind of effect of a service.

    ``call(request, key, **dependencies) -> result`` makes the call (see ``Call``);
    ``on_outcome(uow, effect, outcome, **dependencies)`` decides about its outcome and
    may emit ``emits`` (held to them by the definition's checks) and request effects.
    ``deadline`` and ``retry`` as ``EffectKind``'s, or the name of the dependency that
    holds them (see the module docstring).
    """

    call: Callable[..., dict[str, Any]]
    on_outcome: Callable[..., None]
    emits: tuple[EventClass, ...] = ()
    deadline: timedelta | str = timedelta(minutes=10)
    retry: RetryPolicy | str = field(default_factory=RetryPolicy)


def effect(
    call: Callable[..., dict[str, Any]],
    on_outcome: Callable[..., None],
    *,
    emits: Iterable[EventClass] = (),
    deadline: timedelta | str = timedelta(minutes=10),
    retry: RetryPolicy | str | None = None,
) -> EffectDeclaration:
    """Shorthand: ``effect(charge, on_charged, emits=(ChargeSucceeded, ChargeFailed))``."""
    return EffectDeclaration(
        call=call,
        on_outcome=on_outcome,
        emits=tuple(emits),
        deadline=deadline,
        retry=retry if retry is not None else RetryPolicy(),
    )


def effect_kinds(
    service: str, effects: Mapping[str, EffectDeclaration], given: Mapping[str, object]
) -> list[EffectKind]:
    """The executor's kinds: each declaration's call and decision bound to ``given``."""
    return [
        EffectKind(
            name=name,
            call=bind(declared.call, given, what=f"{service}: the call of effect {name}"),
            on_outcome=bind(
                declared.on_outcome, given, what=f"{service}: the decision about effect {name}"
            ),
            deadline=_given(declared.deadline, timedelta, given, f"{service}: effect {name}"),
            retry=_given(declared.retry, RetryPolicy, given, f"{service}: effect {name}"),
        )
        for name, declared in effects.items()
    ]


def _given(value: T | str, expected: type[T], given: Mapping[str, object], what: str) -> T:
    """``value``, or the dependency it names: checked now, not at the first failed call."""
    if not isinstance(value, str):
        return value
    if value not in given:
        raise DefinitionError(
            f"{what} takes its {expected.__name__} from {value!r}, which the composition "
            "root does not provide"
        )
    found = given[value]
    if not isinstance(found, expected):
        raise DefinitionError(
            f"{what}: {value!r} holds {type(found).__name__}, not {expected.__name__}"
        )
    return found


def effect_problems(
    service: str, effects: Mapping[str, EffectDeclaration], emits: tuple[EventClass, ...]
) -> list[str]:
    """What is wrong with one service's declared effects (empty: nothing).

    Kinds are unique per service by construction (the keys of one mapping); each is a
    name the effects table and the operator's commands can carry.
    """
    problems: list[str] = []
    for name, declared in effects.items():
        if not (isinstance(name, str) and name.isidentifier()):
            problems.append(f"{service}: effect kind {name!r} is not a plain name")
        if not isinstance(declared, EffectDeclaration):
            problems.append(f"{service}: effect {name!r} is not declared with effect()")
            continue
        for out in declared.emits:
            if out not in emits:
                problems.append(
                    f"{service}: its decision about effect {name} emits "
                    f"{getattr(out, 'event_type', repr(out))}, which is not among "
                    f"{service}'s events"
                )
    return problems
