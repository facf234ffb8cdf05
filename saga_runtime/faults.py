"""Crash points for fault-injection tests (the chaos suite and the relay's crash tests).

``SAGA_CRASH_POINTS`` names the points where the process kills itself with
SIGKILL, comma-separated; ``name@0.2`` fires with probability 0.2 each time it
is reached. ``SAGA_FREEZE_POINTS`` names points where it stops itself with
SIGSTOP, once (a frozen host, resumed by SIGCONT). Unset in production: then
each costs one dict lookup.
"""

from __future__ import annotations

import os
import random
import signal
import sys

__all__ = ["crash_point", "freeze_point"]


def _parse(spec: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, probability = item.partition("@")
        points[name] = float(probability) if probability else 1.0
    return points


_POINTS = _parse(os.environ.get("SAGA_CRASH_POINTS", ""))
_FREEZE_POINTS = _parse(os.environ.get("SAGA_FREEZE_POINTS", ""))


def crash_point(name: str) -> None:
    """Die here, as abruptly as a power cut, if the environment asks for it."""
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
