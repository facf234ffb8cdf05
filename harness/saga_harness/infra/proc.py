"""Small process, pidfile, port and lock helpers shared by the infrastructure modules."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

Logger = Callable[[str], None]


def pid_alive(pid: int) -> bool:
    """Tell whether ``pid`` is a live (non-zombie) process.

    A daemon we spawned stays our child until we exit, so after it dies it is a zombie that
    ``kill(pid, 0)`` still reports as alive; reaping it here keeps liveness checks honest.
    """
    if pid <= 0:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    """Return the command line of ``pid`` (empty if unknown), to reject recycled pids."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def read_pidfile(path: Path) -> int | None:
    """Return the pid recorded in ``path`` or None when the file is missing or garbled."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if unknown.

    Stored next to the pid so a pidfile never designates a later process that reused it.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def write_pidfile(path: Path, pid: int) -> None:
    """Record ``pid`` (and its start time) atomically, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{pid} {start_time(pid) or ''}".strip() + "\n")
    tmp.replace(path)


def live_pid(path: Path) -> int | None:
    """The pid recorded in ``path`` if that very process is still alive, else None."""
    try:
        recorded = path.read_text().split()
        pid = int(recorded[0])
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid):
        return None
    if len(recorded) > 1 and start_time(pid) not in (None, recorded[1]):
        return None  # the pid now belongs to another process
    return pid


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; never a blind sleep."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def terminate(
    pid: int, *, timeout: float, log: Logger | None = None, name: str = "process"
) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` seconds, then SIGKILL it.

    SIGCONT follows SIGTERM so that a process paused by a chaos test can still shut down.
    """
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)
    if wait_until(lambda: not pid_alive(pid), timeout=timeout):
        return
    if log:
        log(f"{name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
    kill_and_wait(pid)


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL ``pid`` and wait until it is really gone (and reaped if it was our child)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=timeout, interval=0.05)


def tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a (possibly large) text file, or '' if unreadable."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` so concurrent ``up``/test runs serialise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
