"""A single-node Apache Kafka broker in KRaft mode, run from jars that Maven fetches once.

Why Maven: only package registries are reachable, and Maven Central carries the broker
(``org.apache.kafka:kafka_2.13``) with its whole runtime closure. The jars are cached
machine-wide so that only the first run on a machine downloads anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saga_harness.infra.errors import InfraError
from saga_harness.infra.kafka_sasl import BROKER_PRINCIPAL, broker_password, secured_properties
from saga_harness.infra.maven import copy_dependencies
from saga_harness.infra.proc import (
    Logger,
    cmdline,
    file_lock,
    kill_and_wait,
    live_pid,
    port_open,
    terminate,
    wait_until,
    write_pidfile,
)
from saga_harness.infra.system import ensure_command

DEFAULT_KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
KAFKA_HOST = "127.0.0.1"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# Used only when the broker's own closure has no log4j-core to match.
FALLBACK_LOG4J_VERSION = "2.25.4"
MAIN_CLASS = "kafka.Kafka"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.saga-outbox</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{version}</version>
    </dependency>{extra}
  </dependencies>
</project>
"""

_DEPENDENCY = """
    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
    </dependency>"""

_LOG4J2_PROPERTIES = """\
# written by sagactl: broker logs go to a size-capped file in the state dir
status = warn
name = saga-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.filePattern = {log_file}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


def kafka_cache_dir(version: str) -> Path:
    """Machine-wide cache for one Kafka version (``$SAGA_CACHE_DIR`` or the XDG cache)."""
    root = os.environ.get("SAGA_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    if not os.environ.get("SAGA_CACHE_DIR"):
        base = base / "saga-outbox"
    return base / f"kafka-{version}"


def ensure_java(*, log: Logger) -> str:
    """Path of ``java``, installing a headless JRE 17 on a bare machine."""
    return ensure_command("java", "openjdk-17-jre-headless", log=log)


def _jar_version(libs: Path, artifact: str) -> str | None:
    for jar in libs.glob(f"{artifact}-*.jar"):
        match = re.fullmatch(rf"{re.escape(artifact)}-(\d[\w.\-]*)\.jar", jar.name)
        if match:
            return match.group(1)
    return None


def _slf4j_binding(libs: Path) -> tuple[str, str] | None:
    """The log4j binding artifact and version to add, or None if one is already present."""
    if any(libs.glob("log4j-slf4j*-impl-*.jar")) or any(libs.glob("slf4j-reload4j-*.jar")):
        return None
    slf4j = _jar_version(libs, "slf4j-api") or "1"
    artifact = "log4j-slf4j2-impl" if not slf4j.startswith("1.") else "log4j-slf4j-impl"
    return artifact, _jar_version(libs, "log4j-core") or FALLBACK_LOG4J_VERSION


def _mvn_copy(mvn: str, work: Path, out: Path, version: str, extra: str, mvn_log: Path) -> None:
    pom = work / "pom.xml"
    pom.write_text(_POM.format(scala=SCALA_VERSION, version=version, extra=extra))
    copy_dependencies(
        mvn,
        pom,
        out,
        mvn_log,
        failure=f"Maven could not fetch Kafka {version}; is it published on Maven Central?",
    )


def install_kafka(
    version: str = DEFAULT_KAFKA_VERSION, *, log: Logger = print, cache_dir: Path | None = None
) -> Path:
    """Return the dir of broker jars for ``version``, fetching them with Maven on first use.

    A marker file is written only after a complete fetch, so an interrupted download is
    retried rather than half-used. A lock makes parallel first runs wait for each other.
    """
    home = cache_dir or kafka_cache_dir(version)
    libs = home / "libs"
    marker = home / ".complete"
    if marker.exists() and libs.is_dir():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with file_lock(home / ".lock"):
        if marker.exists() and libs.is_dir():
            return libs
        ensure_java(log=log)
        mvn = ensure_command("mvn", "maven", log=log)
        log(f"fetching Kafka {version} jars with Maven into {libs} (first run only)")
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        mvn_log = home / "mvn.log"
        mvn_log.write_text("")
        _mvn_copy(mvn, home, partial, version, "", mvn_log)
        if not (partial / f"kafka_{SCALA_VERSION}-{version}.jar").exists():
            raise InfraError(
                f"Maven finished but kafka_{SCALA_VERSION}-{version}.jar is missing", logs=[mvn_log]
            )
        binding = _slf4j_binding(partial)
        if binding is not None:
            # Without a binding SLF4J is a no-op and the broker logs nothing at all.
            artifact, log4j_version = binding
            extra = _DEPENDENCY.format(
                group="org.apache.logging.log4j", artifact=artifact, version=log4j_version
            )
            _mvn_copy(mvn, home, partial, version, extra, mvn_log)
        shutil.rmtree(libs, ignore_errors=True)
        partial.replace(libs)
        marker.write_text(f"kafka {version}\n")
        return libs


def wait_for_kafka(
    bootstrap: str,
    *,
    timeout: float = READY_TIMEOUT_S,
    alive: Callable[[], bool] | None = None,
    config: dict[str, str] | None = None,
) -> None:
    """Poll until the broker answers a metadata request listing itself, or raise InfraError.

    ``alive`` lets the caller abort at once when the broker process has died; ``config``
    adds client properties (a secured broker's login).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + timeout
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    quiet = logging.getLogger("saga_harness.infra.kafka.probe")
    quiet.setLevel(logging.CRITICAL)
    client: AdminClient | None = None
    last: object = "port not open"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise InfraError(f"Kafka broker exited while waiting for {bootstrap}")
        if client is None and not port_open(host or KAFKA_HOST, int(port)):
            time.sleep(0.2)
            continue
        if client is None:
            conf: dict[str, Any] = {
                "bootstrap.servers": bootstrap,
                "logger": quiet,
                **(config or {}),
            }
            client = AdminClient(conf)
        try:
            metadata = client.list_topics(timeout=5)
            if metadata.brokers:
                return
            last = "metadata has no brokers yet"
        except KafkaException as exc:
            last = exc
        time.sleep(0.2)
    raise InfraError(f"Kafka at {bootstrap} not ready after {timeout:.0f}s: {last}")


class LocalKafka:
    """One KRaft broker+controller whose data, config and logs live in ``<state_dir>/kafka``.

    The JVM runs in its own session with a pidfile, so it outlives the Python process that
    started it until ``stop()``; ``kill``/``pause``/``resume`` exist for chaos tests.
    ``secured``: clients must log in (SASL) and may do only what ACLs allow (``kafka_sasl``);
    ``admin_properties`` is how the harness logs in as the broker's super user.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        port: int = DEFAULT_KAFKA_PORT,
        controller_port: int = DEFAULT_CONTROLLER_PORT,
        version: str = DEFAULT_KAFKA_VERSION,
        heap: str = "512m",
        log: Logger = print,
        cache_dir: Path | None = None,
        secured: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.secured = secured
        self.port = port
        self.controller_port = controller_port
        self.version = version
        self.heap = heap
        self.log = log
        self.cache_dir = cache_dir

    # -- paths -------------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        """The broker's log4j log."""
        return self.home / "kafka.log"

    @property
    def console_file(self) -> Path:
        """The JVM's stdout/stderr (crashes before logging starts end up here)."""
        return self.home / "kafka.out"

    @property
    def pidfile(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"{KAFKA_HOST}:{self.port}"

    @property
    def mode_file(self) -> Path:
        """Which mode (plain or secured) the running broker was started in."""
        return self.home / "kafka.mode"

    @property
    def mode(self) -> str:
        return "secured" if self.secured else "plain"

    def admin_properties(self) -> dict[str, str]:
        """librdkafka properties that log in as a super user (none for a plain broker)."""
        if not self.secured:
            return {}
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": BROKER_PRINCIPAL,
            "sasl.password": broker_password(self.home),
        }

    # -- state -------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The broker JVM's pid if it is running, else None."""
        pid = live_pid(self.pidfile)
        if pid is None:
            return None
        cl = cmdline(pid)
        if cl and MAIN_CLASS not in cl:
            return None  # stale pidfile, pid recycled by something else
        return pid

    def is_running(self) -> bool:
        """Tell whether the broker process is alive (it may still be starting, or paused)."""
        return self.pid is not None

    # -- lifecycle ---------------------------------------------------------------------------
    def install(self) -> Path:
        """Make sure Java and the broker jars are present; return the jar dir."""
        return install_kafka(self.version, log=self.log, cache_dir=self.cache_dir)

    def start(self, *, wait: bool = True) -> bool:
        """Start the broker unless it already runs; return True if this call started it.

        Formats the KRaft storage on first use. With ``wait`` it blocks until the broker
        answers metadata requests (see ``wait_ready``).
        """
        if self.is_running():
            running = self.mode_file.read_text().strip() if self.mode_file.exists() else "plain"
            if running != self.mode:
                # Never restarted here: others may be using it (a test stack kept with
                # SAGA_KEEP_INFRA serves parallel sessions). Stopped, it restarts in either mode.
                raise InfraError(
                    f"the Kafka broker of {self.state_dir} runs {running}, not {self.mode}: "
                    f"stop it (./dev down, or kill $(cat {self.pidfile})) and start again"
                )
            if wait:
                self.wait_ready()
            return False
        for p in (self.port, self.controller_port):
            if port_open(KAFKA_HOST, p):
                raise InfraError(
                    f"port {p} is already in use by a process this state dir ({self.state_dir}) "
                    "does not own; stop it or choose other Kafka ports"
                )
        libs = self.install()
        java = ensure_java(log=self.log)
        self.home.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._format(java, libs, props)
        self.log(f"starting Kafka {self.version} on {self.bootstrap} (log: {self.log_file})")
        argv = [*self._java_argv(java, libs), MAIN_CLASS, str(props)]
        with self.console_file.open("ab") as console:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
            )
        write_pidfile(self.pidfile, proc.pid)
        self.mode_file.write_text(self.mode + "\n")
        if wait:
            self.wait_ready()
        return True

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until the broker serves metadata; raise InfraError with its log if not."""
        try:
            wait_for_kafka(
                self.bootstrap,
                timeout=timeout,
                alive=self.is_running,
                config=self.admin_properties(),
            )
        except InfraError as exc:
            raise InfraError(str(exc), logs=[self.console_file, self.log_file]) from None

    def stop(self) -> bool:
        """SIGTERM the broker, wait up to 30s, then SIGKILL; return True if it was running."""
        pid = self.pid
        if pid is None:
            return False
        self.log(f"stopping Kafka (pid {pid})")
        terminate(pid, timeout=STOP_TIMEOUT_S, log=self.log, name="Kafka")
        self.pidfile.unlink(missing_ok=True)
        self._wait_ports_released()
        return True

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for chaos tests); data on disk is kept."""
        pid = self.pid
        if pid is not None:
            kill_and_wait(pid)
        self.pidfile.unlink(missing_ok=True)
        self._wait_ports_released()

    def pause(self) -> None:
        """SIGSTOP the broker: it keeps its sockets but stops answering (a hung broker)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused broker."""
        self._signal(signal.SIGCONT)

    def restart(self) -> None:
        """Graceful stop then start, waiting for readiness."""
        self.stop()
        self.start()

    # -- internals ---------------------------------------------------------------------------
    def _wait_ports_released(self, timeout: float = 15.0) -> None:
        # A JVM's main thread can be reaped while its other threads still hold the sockets;
        # only report "stopped" once the listeners are really gone, so start() can bind.
        wait_until(
            lambda: not any(port_open(KAFKA_HOST, p) for p in (self.port, self.controller_port)),
            timeout=timeout,
            interval=0.05,
        )

    def _signal(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is None:
            raise InfraError("Kafka is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _java_argv(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
        ]

    def _write_config(self) -> Path:
        (self.home / "log4j2.properties").write_text(
            _LOG4J2_PROPERTIES.format(log_file=self.log_file)
        )
        ctrl = f"{KAFKA_HOST}:{self.controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": ctrl,
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{ctrl}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "3",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            # After a crash the restarted broker cannot register until its previous session
            # expires; a short session makes kill+restart (chaos tests) take seconds, not ~10s.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
        }
        if self.secured:
            password = broker_password(self.home)
            settings.update(
                secured_properties(bootstrap=self.bootstrap, controller=ctrl, password=password)
            )
        props = self.home / "server.properties"
        # Owner-only: a secured broker's config holds its password.
        fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(
                "# written by sagactl on every start\n"
                + "".join(f"{k}={v}\n" for k, v in settings.items())
            )
        props.chmod(0o600)
        return props

    def _format(self, java: str, libs: Path, props: Path) -> None:
        self.log(f"formatting KRaft storage in {self.data_dir}")
        tool = [*self._java_argv(java, libs), "kafka.tools.StorageTool"]
        cluster = subprocess.run(
            [*tool, "random-uuid"], capture_output=True, text=True, check=False
        )
        cluster_id = cluster.stdout.strip().splitlines()[-1] if cluster.stdout.strip() else ""
        if cluster.returncode != 0 or not cluster_id:
            raise InfraError(
                f"kafka StorageTool random-uuid failed: {cluster.stderr.strip()}",
                logs=[self.log_file],
            )
        result = subprocess.run(
            [*tool, "format", "-t", cluster_id, "-c", str(props), "--standalone"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise InfraError(
                f"kafka StorageTool format failed (exit {result.returncode}):\n"
                f"{result.stdout.strip()}\n{result.stderr.strip()}",
                logs=[self.log_file],
            )
        (self.home / "cluster.id").write_text(cluster_id + "\n")


__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "LocalKafka",
    "install_kafka",
    "kafka_cache_dir",
    "wait_for_kafka",
]
