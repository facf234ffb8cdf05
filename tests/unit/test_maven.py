"""copy_dependencies: Maven's run logged after its command line; a failure says what and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from saga_harness.infra.errors import InfraError
from saga_harness.infra.maven import copy_dependencies


def fake_mvn(tmp_path: Path, exit_code: int) -> str:
    script = tmp_path / "mvn"
    script.write_text(f'#!/bin/sh\necho resolving "$@"\nexit {exit_code}\n')
    script.chmod(0o755)
    return str(script)


def test_the_command_and_mavens_output_go_to_the_log(tmp_path: Path) -> None:
    pom, log = tmp_path / "pom.xml", tmp_path / "mvn.log"
    pom.write_text("<project/>")
    copy_dependencies(fake_mvn(tmp_path, 0), pom, tmp_path / "libs", log, failure="no jars")
    first, second = log.read_text().splitlines()
    assert first.startswith("$ ") and "dependency:copy-dependencies" in first
    assert (
        second.startswith("resolving -q -B -f") and f"-DoutputDirectory={tmp_path}/libs" in second
    )


def test_a_failing_maven_is_an_infra_error_naming_what_failed_and_its_log(tmp_path: Path) -> None:
    pom, log = tmp_path / "pom.xml", tmp_path / "mvn.log"
    pom.write_text("<project/>")
    with pytest.raises(InfraError, match=r"Maven could not fetch X \(exit 3\)") as failed:
        copy_dependencies(
            fake_mvn(tmp_path, 3), pom, tmp_path / "libs", log, failure="Maven could not fetch X"
        )
    assert log in failed.value.logs
