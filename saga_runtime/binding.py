"""Dependency injection by parameter name, for handlers and effects alike."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from saga_runtime.errors import ConfigurationError

__all__ = ["DefinitionError", "bind"]

F = TypeVar("F", bound=Callable[..., Any])


class DefinitionError(ConfigurationError):
    """The system definition contradicts itself (found when it is built)."""


def bind(function: F, given: Mapping[str, object], *, what: str) -> F:
    """``function`` with its keyword-only parameters filled from ``given`` by name.

    As in cosmicpython's bootstrap: ``on_x(uow, event, *, provider)`` gets
    ``given["provider"]``. A parameter that nothing fills (and has no default) is a
    ``DefinitionError`` naming ``what`` now, not a ``TypeError`` per call later.
    Positional arguments pass through; without keyword-only parameters to fill,
    ``function`` itself is returned.
    """
    parameters = inspect.signature(function).parameters.values()
    wanted = {p.name: p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    missing = [
        name
        for name, p in wanted.items()
        if name not in given and p.default is inspect.Parameter.empty
    ]
    if missing:
        raise DefinitionError(
            f"{what} ({getattr(function, '__qualname__', function)}) needs "
            f"{', '.join(missing)}, which the composition root does not provide"
        )
    kwargs = {name: given[name] for name in wanted if name in given}
    if not kwargs:
        return function

    def bound(*args: Any) -> Any:
        return function(*args, **kwargs)

    bound.__qualname__ = getattr(function, "__qualname__", repr(function))
    bound.__wrapped__ = function  # type: ignore[attr-defined]
    return bound  # type: ignore[return-value]
