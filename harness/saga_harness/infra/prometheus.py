"""A Prometheus server from Debian's ``prometheus`` package, scraping the system's processes.

Installed on demand like PostgreSQL (apt, root only). The configuration is written here from
the processes' metrics addresses; the recording and alert rules are the product's own
(``deploy/prometheus/rules.yml``, which compose's Prometheus loads too), so what is tested is
what an operator deploys. ``./dev up`` runs it under its supervisor (``argv``); the tests
start and stop it themselves (``start``/``stop``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from saga_harness.checkout import REPO
from saga_harness.infra.errors import InfraError
from saga_harness.infra.proc import Logger, tail, terminate, wait_until
from saga_harness.infra.system import ensure_command

__all__ = ["DEFAULT_PROMETHEUS_PORT", "RULES", "LocalPrometheus", "scrape_config"]

# Not 9090: on a host with systemd, installing Debian's package also starts its own server
# there, and this one must not collide with it.
DEFAULT_PROMETHEUS_PORT = 9190
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
READY_TIMEOUT_S = 30.0


def scrape_config(
    targets: Mapping[str, str],
    *,
    rule_files: list[Path],
    scrape_interval: str = "5s",
    evaluation_interval: str = "5s",
) -> dict[str, Any]:
    """A Prometheus configuration scraping ``targets`` (job name -> ``host:port``, each
    serving ``/metrics``) and evaluating ``rule_files``. JSON is YAML: written as JSON."""
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
            "scrape_timeout": scrape_interval,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]}
            for job, address in targets.items()
        ],
    }


class LocalPrometheus:
    """One Prometheus whose configuration and data live in ``<state_dir>/prometheus``."""

    def __init__(
        self, *, state_dir: Path, port: int = DEFAULT_PROMETHEUS_PORT, log: Logger = print
    ) -> None:
        self.home = Path(state_dir).absolute() / "prometheus"
        self.port = port
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.home / "prometheus.yml"

    @property
    def log_file(self) -> Path:
        return self.home / "prometheus.log"

    def install(self) -> str:
        """The ``prometheus`` binary, installed with apt first if it is missing."""
        return shutil.which("prometheus") or ensure_command(
            "prometheus", "prometheus", log=self.log
        )

    def configure(self, config: Mapping[str, Any]) -> None:
        """Write ``config`` (see ``scrape_config``) where ``argv`` points the server."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(config, indent=2))

    def argv(self) -> list[str]:
        """The server's command line: loopback only, two days of data, reloadable."""
        return [
            self.install(),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.home / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]

    def start(self) -> None:
        """Start the server as a child of this process and wait until it is ready."""
        argv = self.argv()
        with self.log_file.open("ab") as output:
            self._process = subprocess.Popen(
                argv, stdout=output, stderr=output, start_new_session=True
            )
        if not wait_until(self.ready, timeout=READY_TIMEOUT_S):
            self.stop()
            raise InfraError(f"Prometheus not ready on {self.url}:\n{tail(self.log_file)}")

    def ready(self) -> bool:
        """Whether the server answers ``/-/ready``."""
        if self._process is not None and self._process.poll() is not None:
            raise InfraError(f"Prometheus exited:\n{tail(self.log_file)}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, path: str, **params: str) -> Any:
        """``data`` of an HTTP API answer (``/api/v1/...``)."""
        response = httpx.get(f"{self.url}{path}", params=params, timeout=5)
        response.raise_for_status()
        return response.json()["data"]

    def stop(self) -> None:
        """SIGTERM the server (SIGKILL after 10 s), if this object started it."""
        if self._process is not None and self._process.poll() is None:
            terminate(self._process.pid, timeout=10, log=self.log, name="prometheus")
            self._process.wait()
        self._process = None
