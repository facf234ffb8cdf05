"""Install missing system tools (Java, Maven, PostgreSQL) with apt, only when they are needed."""

from __future__ import annotations

import os
import shutil
import subprocess

from saga_harness.infra.errors import InfraError
from saga_harness.infra.proc import Logger

_apt_updated = False


def is_root() -> bool:
    """Tell whether we run as root, which decides both apt installs and PostgreSQL's user."""
    return os.geteuid() == 0


def apt_install(packages: list[str], *, log: Logger) -> None:
    """Install Debian packages non-interactively, so a bare machine provisions itself.

    Only root can do this; anyone else gets an error that says exactly what to install.
    """
    if not is_root() or shutil.which("apt-get") is None:
        raise InfraError(
            f"missing system packages {packages}: install them (e.g. `sudo apt-get install -y "
            f"{' '.join(packages)}`) and retry"
        )
    global _apt_updated
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {' '.join(packages)} with apt-get (first run only)")
    if not _apt_updated:
        _run(["apt-get", "update", "-q"], env)
        _apt_updated = True
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env)


def _run(argv: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise InfraError(
            f"`{' '.join(argv)}` failed (exit {result.returncode}):\n" + "\n".join(output)
        )


def ensure_command(command: str, apt_package: str, *, log: Logger) -> str:
    """Return the path of ``command``, installing ``apt_package`` first if it is missing."""
    found = shutil.which(command)
    if found:
        return found
    apt_install([apt_package], log=log)
    found = shutil.which(command)
    if not found:
        raise InfraError(f"installed {apt_package} but `{command}` is still not on PATH")
    return found
