"""The supervisor's pidfile: how ``sagactl status`` sees it and ``sagactl down`` stops it."""

from __future__ import annotations

from pathlib import Path

from saga_harness.infra.proc import Logger, live_pid, terminate
from saga_harness.supervisor.children import STOP_TIMEOUT_S

__all__ = ["SUPERVISOR_PIDFILE", "stop_supervisor", "supervisor_pid", "supervisor_pidfile"]

SUPERVISOR_PIDFILE = "supervisor.pid"


def supervisor_pidfile(state_dir: Path) -> Path:
    """Where a supervisor started with ``state_dir`` records its pid."""
    return Path(state_dir) / SUPERVISOR_PIDFILE


def supervisor_pid(state_dir: Path) -> int | None:
    """The pid of the supervisor running for ``state_dir``, or None."""
    return live_pid(supervisor_pidfile(state_dir))


def stop_supervisor(
    state_dir: Path, *, timeout: float = STOP_TIMEOUT_S + 15, log: Logger = print
) -> bool:
    """SIGTERM the supervisor recorded in ``state_dir`` and wait for it to exit.

    This is how ``sagactl down`` in another shell stops ``sagactl up``: the supervisor then
    stops its children itself. Returns True if a supervisor was running.
    """
    pid = supervisor_pid(state_dir)
    if pid is None:
        supervisor_pidfile(state_dir).unlink(missing_ok=True)
        return False
    log(f"stopping supervisor (pid {pid})")
    terminate(pid, timeout=timeout, log=log, name="supervisor")
    supervisor_pidfile(state_dir).unlink(missing_ok=True)
    return True
