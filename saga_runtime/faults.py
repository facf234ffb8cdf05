"""Crash points for fault-injection tests (the chaos suite, the relay's and the runtime's tests).

``SAGA_CRASH_POINTS`` names the points where the process kills itself with
SIGKILL, comma-separated; ``name@0.2`` fires with probability 0.2 each time it
is reached. ``raise:name`` (also ``raise:name@0.2``) raises ``CrashPointError``
there instead: the thread that reached it dies of an exception nobody handles,
which is how a bug kills a background thread while its process lives on.
``SAGA_FREEZE_POINTS`` names points where it stops itself with SIGSTOP, once (a
frozen host, resumed by SIGCONT). Unset in production: then each costs one dict
lookup.
"""

from __future__ import annotations

import os
import random
import signal
import sys

__all__ = ["CrashPointError", "crash_point", "freeze_point"]

_RAISE = "raise:"


class CrashPointError(RuntimeError):
    """Raised at a crash point armed with ``raise:``; on purpose, nothing catches it."""


def _parse(spec: str) -> dict[str, float]:
    """Point name (``raise:`` kept as part of it) to probability."""
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, probability = item.partition("@")
        points[name] = float(probability) if probability else 1.0
    return points


_POINTS = _parse(os.environ.get("SAGA_CRASH_POINTS", ""))
_FREEZE_POINTS = _parse(os.environ.get("SAGA_FREEZE_POINTS", ""))


def crash_point(name: str) -> None:
    """Die here, as abruptly as a power cut, or raise, if the environment asks for it."""
    if not _POINTS:
        return
    probability = _POINTS.get(_RAISE + name)
    if probability is not None and random.random() < probability:
        sys.stderr.write(f'{{"event": "fault.crash_point", "point": "{name}", "mode": "raise"}}\n')
        sys.stderr.flush()
        raise CrashPointError(f"crash point {name} armed with raise:")
    probability = _POINTS.get(name)
    if probability is None or random.random() >= probability:
        return
    sys.stderr.write(f'{{"event": "fault.crash_point", "point": "{name}"}}\n')
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def freeze_point(name: str) -> None:
    """Stop here, sockets open, as a frozen host would, the first time it is reached."""
    if _FREEZE_POINTS.pop(name, None) is None:
        return
    sys.stderr.write(f'{{"event": "fault.freeze_point", "point": "{name}"}}\n')
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
