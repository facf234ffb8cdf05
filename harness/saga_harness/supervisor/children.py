"""What the supervisor knows of each child: its spec, its state across restarts, and the
timings of restarts and health checks."""

from __future__ import annotations

import contextlib
import ctypes
import io
import signal
import subprocess
from dataclasses import dataclass, field

import httpx

__all__ = [
    "BACKOFF_INITIAL_S",
    "BACKOFF_MAX_S",
    "HEALTH_INTERVAL_S",
    "HEALTH_TIMEOUT_S",
    "STABLE_AFTER_S",
    "START_GRACE_S",
    "STOP_TIMEOUT_S",
    "UNHEALTHY_AFTER_S",
    "Child",
    "ProcessSpec",
    "die_with_parent",
    "fetch",
]

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 30.0
STOP_TIMEOUT_S = 15.0
HEALTH_INTERVAL_S = 2.0
HEALTH_TIMEOUT_S = 2.0
# A child whose /healthz has failed (error, timeout or not 200) for this long is hung: killed
# and restarted. A new child gets START_GRACE_S to answer for the first time.
UNHEALTHY_AFTER_S = 20.0
START_GRACE_S = 60.0
_PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


@dataclass(frozen=True)
class ProcessSpec:
    """One supervised process: a unique name (also its log file name), argv and extra env.

    ``health_url`` (``http://host:port``): where it serves ``/healthz`` and ``/readyz``.
    """

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    health_url: str | None = None


@dataclass
class Child:
    """One supervised process as the supervisor tracks it across restarts."""

    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_INITIAL_S
    restart_at: float | None = None
    restarts: int = 0
    log_handle: io.BufferedWriter | None = field(default=None, repr=False)
    # Health, for children with a health_url (written by the health thread, under the lock).
    health_deadline: float = 0.0  # /healthz must answer 200 before this, or the child is hung
    health_problem: str | None = None  # the last failure, for the log
    hung: bool = False
    ready: bool = False  # /readyz has answered 200 since this start


def fetch(client: httpx.Client, url: str) -> tuple[bool, str]:
    """(answered 200, what it answered)."""
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return response.status_code == 200, f"{response.status_code} {response.text[:200]}"


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies without cleaning up."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
