"""Resolving a POM's runtime dependencies from Maven Central into a directory of jars."""

from __future__ import annotations

import subprocess
from pathlib import Path

from saga_harness.infra.errors import InfraError

__all__ = ["copy_dependencies"]


def copy_dependencies(mvn: str, pom: Path, out: Path, mvn_log: Path, *, failure: str) -> None:
    """Copy ``pom``'s runtime dependencies into ``out`` (``dependency:copy-dependencies``).

    Maven's output is appended to ``mvn_log``, after the command line; if Maven fails,
    InfraError says ``failure`` with the exit code and points at the log.
    """
    argv = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out}",
    ]
    with mvn_log.open("a") as sink:
        sink.write(f"$ {' '.join(argv)}\n")
        sink.flush()
        result = subprocess.run(
            argv, stdout=sink, stderr=subprocess.STDOUT, check=False, cwd=pom.parent
        )
    if result.returncode != 0:
        raise InfraError(
            f"{failure} (exit {result.returncode}): `{' '.join(argv)}`", logs=[mvn_log]
        )
