"""Debezium's embedded engine, fetched from Maven Central once, and the small Java relay on it.

Only the relay benchmark's ``--against debezium`` uses this: the reference implementation of
the outbox pattern (a logical replication slot read by Debezium's PostgreSQL connector, rows
routed by the Outbox Event Router) run next to ours on the same database and broker. The jars
are resolved like the broker's (``kafka.py``): a generated POM, ``mvn dependency:copy-
dependencies``, a machine-wide cache with a completion marker. ``OutboxEventRelay.java``
(beside this module) is compiled with ``javac`` into the same cache, once per source version.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from saga_harness.infra.errors import InfraError
from saga_harness.infra.kafka import ensure_java, kafka_cache_dir
from saga_harness.infra.maven import copy_dependencies
from saga_harness.infra.proc import Logger, file_lock
from saga_harness.infra.system import ensure_command

__all__ = [
    "DEBEZIUM_ARTIFACTS",
    "DEBEZIUM_VERSION",
    "MAIN_CLASS",
    "DebeziumRuntime",
    "debezium_pom",
    "ensure_debezium",
]

DEBEZIUM_VERSION = "3.6.1.Final"
# The engine, the PostgreSQL connector (the Outbox Event Router comes with it, in
# debezium-connect-plugins) and the API the Java program is written against.
DEBEZIUM_ARTIFACTS = ("debezium-embedded", "debezium-connector-postgres", "debezium-api")
# The engine logs through SLF4J 1.7 and its closure brings no binding: without one it is
# silent, errors included.
SLF4J_SIMPLE = ("org.slf4j", "slf4j-simple", "1.7.36")
MAIN_CLASS = "OutboxEventRelay"
SOURCE = Path(__file__).with_name("java") / f"{MAIN_CLASS}.java"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.saga-outbox</groupId>
  <artifactId>debezium-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>{dependencies}
  </dependencies>
</project>
"""

# io.confluent:* is excluded: debezium-embedded's POM names an optional Avro converter that
# lives only in Confluent's repository, which is not reachable here (and not needed).
_DEBEZIUM_DEPENDENCY = """
    <dependency>
      <groupId>io.debezium</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
      <exclusions>
        <exclusion>
          <groupId>io.confluent</groupId>
          <artifactId>*</artifactId>
        </exclusion>
      </exclusions>
    </dependency>"""

_PLAIN_DEPENDENCY = """
    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
    </dependency>"""


def debezium_pom(version: str = DEBEZIUM_VERSION) -> str:
    """The POM whose runtime closure is the engine, the connector and a logging binding."""
    deps = "".join(
        _DEBEZIUM_DEPENDENCY.format(artifact=a, version=version) for a in DEBEZIUM_ARTIFACTS
    )
    group, artifact, slf4j = SLF4J_SIMPLE
    deps += _PLAIN_DEPENDENCY.format(group=group, artifact=artifact, version=slf4j)
    return _POM.format(dependencies=deps)


class DebeziumRuntime:
    """The jars and the compiled relay: what ``java -cp`` needs to run ``OutboxEventRelay``."""

    def __init__(self, *, libs: Path, classes: Path, java: str) -> None:
        self.libs = libs
        self.classes = classes
        self.java = java

    @property
    def classpath(self) -> str:
        return f"{self.classes}:{self.libs}/*"

    def argv(self, config: Path, *, heap: str = "512m") -> list[str]:
        """The command line that runs the relay with the properties file ``config``."""
        return [
            self.java,
            f"-Xmx{heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp",
            self.classpath,
            MAIN_CLASS,
            str(config),
        ]


def _fetch_jars(home: Path, version: str, *, log: Logger) -> Path:
    libs = home / "libs"
    marker = home / ".complete"
    if marker.exists() and libs.is_dir():
        return libs
    mvn = ensure_command("mvn", "maven", log=log)
    log(f"fetching Debezium {version} jars with Maven into {libs} (first run only)")
    partial = home / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    pom = home / "pom.xml"
    pom.write_text(debezium_pom(version))
    mvn_log = home / "mvn.log"
    mvn_log.write_text("")
    copy_dependencies(
        mvn, pom, partial, mvn_log, failure=f"Maven could not fetch Debezium {version}"
    )
    for artifact in DEBEZIUM_ARTIFACTS:
        if not (partial / f"{artifact}-{version}.jar").exists():
            raise InfraError(
                f"Maven finished but {artifact}-{version}.jar is missing", logs=[mvn_log]
            )
    shutil.rmtree(libs, ignore_errors=True)
    partial.replace(libs)
    marker.write_text(f"debezium {version}\n")
    return libs


def _compile(home: Path, libs: Path, *, log: Logger) -> Path:
    """``OutboxEventRelay.class`` under a directory named after the source's hash."""
    source = SOURCE.read_bytes()
    classes = home / f"classes-{hashlib.sha256(source).hexdigest()[:12]}"
    if (classes / f"{MAIN_CLASS}.class").exists():
        return classes
    # javac comes with the JDK, not with the JRE the broker needs.
    javac = ensure_command("javac", "openjdk-17-jdk-headless", log=log)
    log(f"compiling {SOURCE.name} into {classes}")
    partial = home / "classes.partial"
    shutil.rmtree(partial, ignore_errors=True)
    argv = [javac, "-d", str(partial), "-cp", f"{libs}/*", str(SOURCE)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InfraError(
            f"`{' '.join(argv)}` failed (exit {result.returncode}):\n{result.stderr.strip()}"
        )
    shutil.rmtree(classes, ignore_errors=True)
    partial.replace(classes)
    return classes


def ensure_debezium(
    version: str = DEBEZIUM_VERSION, *, log: Logger = print, cache_dir: Path | None = None
) -> DebeziumRuntime:
    """Fetch the jars and compile the relay on first use (a lock serialises parallel runs)."""
    home = cache_dir or kafka_cache_dir(version).with_name(f"debezium-{version}")
    home.mkdir(parents=True, exist_ok=True)
    with file_lock(home / ".lock"):
        java = ensure_java(log=log)
        libs = _fetch_jars(home, version, log=log)
        classes = _compile(home, libs, log=log)
    return DebeziumRuntime(libs=libs, classes=classes, java=java)
