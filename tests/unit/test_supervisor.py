"""The process supervisor: restarts crashed children with backoff and stops them cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from saga_harness.checkout import PYTHONPATH, REPO
from saga_harness.infra.proc import pid_alive, wait_until
from saga_harness.supervisor import (
    ProcessSpec,
    Supervisor,
    stop_supervisor,
    supervisor_pid,
)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SLEEPER = py("import os, time; print('up', os.getpid(), flush=True); time.sleep(120)")


def _child_pids(log: Path) -> list[int]:
    """The pids the sleeper printed, one "up <pid>" line per start."""
    return [int(p) for p in re.findall(r"^up (\d+)$", log.read_text(), re.MULTILINE)]


def quiet(_msg: str) -> None:
    pass


def test_crashing_child_is_restarted_with_backoff(tmp_path: Path) -> None:
    sup = Supervisor([ProcessSpec("crasher", py("raise SystemExit(3)"))], tmp_path, log=quiet)
    started = time.monotonic()
    sup.start()
    try:
        assert wait_until(lambda: sup.restart_counts()["crasher"] >= 2, timeout=10)
        # Backoff is 0.5s then 1s: two restarts cannot happen sooner than that.
        assert time.monotonic() - started >= 1.4
    finally:
        sup.stop()
    assert (tmp_path / "crasher.log").read_text().count("supervisor starting crasher") >= 3


def test_child_output_and_env_reach_its_log(tmp_path: Path) -> None:
    spec = ProcessSpec(
        "echo",
        py("import os, time; print(os.environ['GREETING'], flush=True); time.sleep(60)"),
        env={"GREETING": "hello-from-child"},
    )
    sup = Supervisor([spec], tmp_path, log=quiet)
    sup.start()
    try:
        log = tmp_path / "echo.log"
        assert wait_until(lambda: "hello-from-child" in log.read_text(), timeout=10)
    finally:
        sup.stop()


def test_a_withheld_variable_reaches_only_the_child_whose_spec_sets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOMEONES_PASSWORD", "inherited-secret")
    monkeypatch.setenv("HARMLESS", "inherited-setting")
    show = py(
        "import os, time; print(os.environ.get('SOMEONES_PASSWORD'),"
        " os.environ.get('HARMLESS'), flush=True); time.sleep(60)"
    )
    specs = [
        ProcessSpec("stranger", show),
        ProcessSpec("owner", show, env={"SOMEONES_PASSWORD": "its-own"}),
    ]
    sup = Supervisor(specs, tmp_path, log=quiet, withheld={"SOMEONES_PASSWORD"})
    sup.start()
    try:
        stranger, owner = tmp_path / "stranger.log", tmp_path / "owner.log"
        assert wait_until(lambda: "None inherited-setting" in stranger.read_text(), timeout=10)
        assert wait_until(lambda: "its-own inherited-setting" in owner.read_text(), timeout=10)
    finally:
        sup.stop()
    assert "inherited-secret" not in stranger.read_text() + owner.read_text()


def test_stop_terminates_children_and_kills_stubborn_ones(tmp_path: Path) -> None:
    stubborn = py(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('up', flush=True); time.sleep(120)"
    )
    sup = Supervisor(
        [ProcessSpec("polite", SLEEPER), ProcessSpec("stubborn", stubborn)], tmp_path, log=quiet
    )
    sup.start()
    # Its own "up" line (after it ignores SIGTERM), not the "up" in "supervisor starting".
    assert wait_until(
        lambda: re.search(r"^up$", (tmp_path / "stubborn.log").read_text(), re.MULTILINE),
        timeout=10,
    )
    pids = sup.pids()
    assert all(pids.values())
    began = time.monotonic()
    sup.stop(timeout=1.0)
    assert time.monotonic() - began < 5
    assert not any(pid_alive(pid) for pid in pids.values() if pid)
    assert sup.restart_counts() == {"polite": 0, "stubborn": 0}


def test_stop_supervisor_from_another_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from saga_harness.supervisor import ProcessSpec, Supervisor
        spec = ProcessSpec("sleeper", {SLEEPER!r})
        Supervisor([spec], Path({str(tmp_path / "logs")!r}), state_dir=Path({str(state)!r}),
                   log=lambda m: None).run_until_signalled()
        """
    )
    # This checkout's harness, whichever checkout the venv's editable install points at.
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env)
    try:
        assert wait_until(lambda: supervisor_pid(state) == proc.pid, timeout=15)
        log = tmp_path / "logs" / "sleeper.log"
        # The child's own line: "up" alone also matches the supervisor's "supervisor starting".
        assert wait_until(lambda: log.exists() and _child_pids(log), timeout=15)
        assert stop_supervisor(state, log=quiet)
        assert proc.wait(timeout=20) == 0
        child_pid = _child_pids(log)[-1]
        assert not pid_alive(child_pid)
        assert supervisor_pid(state) is None
        assert not stop_supervisor(state, log=quiet)
    finally:
        if proc.poll() is None:
            proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health_child(port: int, ready_status: int = 200) -> list[str]:
    """A child that prints its pid and serves /healthz (200) and /readyz (``ready_status``)."""
    return py(
        textwrap.dedent(
            f"""
            import os
            from http.server import BaseHTTPRequestHandler, HTTPServer
            class H(BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response({ready_status} if self.path == "/readyz" else 200)
                    self.end_headers()
                def log_message(self, *args):
                    pass
            server = HTTPServer(("127.0.0.1", {port}), H)
            print("up", os.getpid(), flush=True)
            server.serve_forever()
            """
        )
    )


def test_a_child_that_stops_answering_healthz_is_killed_and_restarted(tmp_path: Path) -> None:
    port = _free_port()
    messages: list[str] = []
    spec = ProcessSpec("svc", health_child(port), health_url=f"http://127.0.0.1:{port}")
    sup = Supervisor(
        [spec], tmp_path, log=messages.append, health_interval=0.2, unhealthy_after=1.5
    )
    sup.start()
    try:
        assert sup.wait_ready(timeout=20), messages
        assert "svc is ready" in messages
        first = sup.pids()["svc"]
        assert first is not None
        os.kill(first, signal.SIGSTOP)  # like a frozen process: alive, never answering
        assert wait_until(lambda: sup.pids()["svc"] not in (None, first), timeout=30), messages
        assert sup.restart_counts()["svc"] == 1
        assert any(m.startswith(f"svc (pid {first}) is hung") for m in messages), messages
        assert wait_until(lambda: not pid_alive(first), timeout=10)
        assert sup.wait_ready(timeout=20)  # the new one answers again
    finally:
        sup.stop()


def test_a_child_alive_but_not_ready_is_left_running_and_not_ready(tmp_path: Path) -> None:
    port = _free_port()
    messages: list[str] = []
    spec = ProcessSpec(
        "svc", health_child(port, ready_status=503), health_url=f"http://127.0.0.1:{port}"
    )
    sup = Supervisor(
        [spec], tmp_path, log=messages.append, health_interval=0.2, unhealthy_after=1.0
    )
    sup.start()
    try:
        assert wait_until(lambda: _child_pids(tmp_path / "svc.log"), timeout=10)
        assert not sup.wait_ready(timeout=3)
        assert sup.restart_counts() == {"svc": 0}
        assert sup.ready() == {"svc": False}
    finally:
        sup.stop()


def test_a_child_that_never_answers_is_restarted_after_its_start_grace(tmp_path: Path) -> None:
    port = _free_port()
    messages: list[str] = []
    spec = ProcessSpec("mute", SLEEPER, health_url=f"http://127.0.0.1:{port}")
    sup = Supervisor(
        [spec],
        tmp_path,
        log=messages.append,
        health_interval=0.2,
        unhealthy_after=0.5,
        start_grace=2.0,
    )
    sup.start()
    try:
        assert wait_until(lambda: sup.restart_counts()["mute"] >= 1, timeout=20), messages
        assert any("is hung" in m and "ConnectError" in m for m in messages), messages
    finally:
        sup.stop()
