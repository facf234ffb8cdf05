"""Run the system's processes (relays, services) as children and keep them alive.

Why our own supervisor: ``sagactl up`` must run several long-lived processes from one
terminal without systemd or Docker, restart any that crash (with backoff, so a process that
dies at once does not spin), restart any that hangs (its ``/healthz`` stops answering), and
shut everything down cleanly on Ctrl-C or ``sagactl down``.
"""

from saga_harness.supervisor.children import ProcessSpec
from saga_harness.supervisor.pidfile import stop_supervisor, supervisor_pid, supervisor_pidfile
from saga_harness.supervisor.supervisor import Supervisor

__all__ = ["ProcessSpec", "Supervisor", "stop_supervisor", "supervisor_pid", "supervisor_pidfile"]
