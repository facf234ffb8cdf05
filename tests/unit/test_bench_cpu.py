"""CPU per process over the saga benchmark's window: /proc parsing, process trees, arithmetic."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from saga_harness.bench.cpu import (
    ProcStat,
    Reading,
    Target,
    cpu_figures,
    descendants,
    parse_stat,
    read_process_table,
    take_readings,
)
from saga_harness.bench.cpu_window import CpuWindow
from saga_harness.bench.render import saga_summary
from saga_harness.bench.spawn import cpu_targets
from saga_harness.infra import LocalStack
from saga_harness.system import Process, System
from saga_runtime import KafkaSettings


def stat_line(
    pid: int,
    comm: str,
    ppid: int,
    *,
    utime: int = 0,
    stime: int = 0,
    cutime: int = 0,
    cstime: int = 0,
    starttime: int = 1000,
    state: str = "S",
) -> str:
    return (
        f"{pid} ({comm}) {state} {ppid} {pid} {pid} 0 -1 4194560 120 0 0 0 "
        f"{utime} {stime} {cutime} {cstime} 20 0 1 0 {starttime} 219000000 4000 "
        "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
    )


def table(*lines: str) -> dict[int, ProcStat]:
    stats = [parse_stat(line) for line in lines]
    return {s.pid: s for s in stats}


def fake_proc(root: Path, *lines: str) -> Path:
    for line in lines:
        pid = line.split(" ", 1)[0]
        (root / pid).mkdir()
        (root / pid / "stat").write_text(line)
    return root


def test_a_command_name_with_spaces_and_parentheses_is_split_on_the_last_one() -> None:
    comm = "postgres: bench saga 127.0.0.1(51234) idle"
    line = stat_line(
        4321, comm, 100, utime=7, stime=3, cutime=2, cstime=1, starttime=98765, state="R"
    )
    stat = parse_stat(line)
    assert stat == ProcStat(
        pid=4321,
        comm=comm,
        state="R",
        ppid=100,
        utime=7,
        stime=3,
        cutime=2,
        cstime=1,
        starttime=98765,
    )
    assert parse_stat(stat_line(5, ") S 1 (", 1, utime=9)).utime == 9


@pytest.mark.parametrize("text", ["", "no parentheses here", "12 (short) S 1 2 3"])
def test_what_is_not_a_stat_line_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_stat(text)


def test_the_process_table_reads_numbered_entries_and_skips_the_rest(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, stat_line(1, "init", 0), stat_line(100, "postgres", 1, utime=5))
    (proc / "self").mkdir()
    (proc / "self" / "stat").write_text(stat_line(1, "init", 0))
    (proc / "7").mkdir()  # exited between listing and reading: no stat
    (proc / "8").mkdir()
    (proc / "8" / "stat").write_text("garbage")
    (proc / "meminfo").write_text("MemTotal: 1 kB\n")
    found = read_process_table(proc)
    assert sorted(found) == [1, 100]
    assert found[100].utime == 5


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_the_real_process_table_holds_this_process_and_its_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        found = read_process_table()
        assert found[os.getpid()].ppid == os.getppid()
        assert child.pid in descendants(found, os.getpid())
    finally:
        child.kill()
        child.wait()


POSTGRES_TREE = (
    stat_line(1, "init", 0),
    stat_line(100, "postgres", 1),
    stat_line(101, "postgres: checkpointer", 100),
    stat_line(102, "postgres: bench saga idle", 100),
    stat_line(103, "postgres: parallel worker", 102),  # a grandchild
    stat_line(200, "postgres", 1),  # another engineer's server
    stat_line(201, "postgres: walwriter", 200),
)


def test_descendants_are_children_and_their_children_and_not_the_root() -> None:
    procs = table(*POSTGRES_TREE)
    assert descendants(procs, 100) == {101, 102, 103}
    assert descendants(procs, 200) == {201}
    assert descendants(procs, 103) == set()
    assert descendants(procs, 999) == set()


def test_a_tree_counts_reaped_children_and_a_plain_target_only_its_own_time() -> None:
    procs = table(
        stat_line(1, "init", 0),
        stat_line(100, "postgres", 1, utime=10, stime=5, cutime=100, cstime=20, starttime=50),
        stat_line(101, "postgres: bench saga idle", 100, utime=40, stime=10),
        stat_line(200, "python", 1, utime=30, stime=6, cutime=500, cstime=50, starttime=70),
        stat_line(201, "python child", 200, utime=99),
    )
    readings = take_readings(
        {"postgres": Target(100, tree=True), "orders": Target(200), "relay-0": Target(None)},
        procs,
    )
    assert readings["postgres"] == Reading(starttime=50, ticks=10 + 5 + 100 + 20 + 40 + 10)
    assert readings["orders"] == Reading(starttime=70, ticks=36)
    assert readings["relay-0"] == "not running"


def test_a_missing_or_zombie_pid_has_no_reading() -> None:
    procs = table(stat_line(1, "init", 0), stat_line(300, "python", 1, utime=5, state="Z"))
    readings = take_readings({"gone": Target(12345), "dead": Target(300)}, procs)
    assert readings == {"gone": "pid 12345 not running", "dead": "pid 300 not running"}


def test_backends_that_exit_or_start_in_the_window_are_counted_for_the_window_only() -> None:
    targets = {"postgres": Target(100, tree=True)}
    before = table(
        stat_line(100, "postgres", 1, utime=10, stime=5, cutime=100, cstime=20),
        stat_line(101, "postgres: a", 100, utime=40, stime=10),  # exits in the window
        stat_line(102, "postgres: b", 100, utime=7, stime=3),  # runs throughout
    )
    after = table(
        # 101 ended at 55 + 15 ticks (20 of them in the window); the postmaster reaped it.
        stat_line(100, "postgres", 1, utime=12, stime=6, cutime=100 + 55, cstime=20 + 15),
        stat_line(102, "postgres: b", 100, utime=17, stime=3),
        stat_line(103, "postgres: c", 100, utime=4, stime=1),  # connected in the window
    )
    figures = cpu_figures(
        take_readings(targets, before),
        take_readings(targets, after),
        seconds=1.0,
        completed=1,
        ticks_per_second=100,
        cores=2,
    )
    # postmaster 3 + a's last 20 + b's 10 + c's 5 ticks
    assert figures["processes"]["postgres"]["cpu_s"] == pytest.approx(0.38)


def test_percent_of_a_core_and_ms_per_saga_over_the_window() -> None:
    first = {
        "orders": Reading(1, 1_000),
        "postgres": Reading(2, 5_000),
        "kafka": Reading(3, 100),
    }
    last = {
        "orders": Reading(1, 1_250),  # 2.5 s of CPU in 10 s
        "postgres": Reading(2, 5_443),  # 4.43 s
        "kafka": Reading(3, 100),  # idle
    }
    figures = cpu_figures(first, last, seconds=10.0, completed=50, ticks_per_second=100, cores=2)
    assert list(figures["processes"]) == ["postgres", "orders", "kafka"], "largest first"
    assert figures["processes"]["orders"] == {
        "cpu_s": 2.5,
        "pct_of_core": 25.0,
        "ms_per_saga": 50.0,
    }
    assert figures["processes"]["postgres"]["pct_of_core"] == pytest.approx(44.3)
    assert figures["processes"]["kafka"]["ms_per_saga"] == 0.0
    assert figures["total"] == {"cpu_s": 6.93, "pct_of_core": 69.3, "ms_per_saga": 138.6}
    assert (figures["available"], figures["completed_sagas"], figures["cores"]) == (True, 50, 2)


def test_no_completed_saga_leaves_ms_per_saga_empty_rather_than_dividing_by_zero() -> None:
    figures = cpu_figures(
        {"orders": Reading(1, 0)},
        {"orders": Reading(1, 100)},
        seconds=5.0,
        completed=0,
        ticks_per_second=100,
        cores=2,
    )
    assert figures["processes"]["orders"] == {
        "cpu_s": 1.0,
        "pct_of_core": 20.0,
        "ms_per_saga": None,
    }


def test_a_process_missing_or_restarted_is_named_and_left_out_of_the_total() -> None:
    first: dict[str, Reading | str] = {
        "orders": Reading(1, 0),
        "stock": Reading(2, 0),
        "relay-0": Reading(3, 0),
        "kafka": "pid 77 not running",
    }
    last: dict[str, Reading | str] = {
        "orders": Reading(1, 100),
        "stock": Reading(9, 900),  # same pid, another process
        "relay-0": "pid 3 not running",
        "kafka": "pid 77 not running",
    }
    figures = cpu_figures(first, last, seconds=1.0, completed=10, ticks_per_second=100, cores=2)
    assert list(figures["processes"]) == ["orders"]
    assert figures["total"]["cpu_s"] == 1.0
    assert figures["unavailable"] == {
        "stock": "restarted during the window",
        "relay-0": "pid 3 not running at the end of the window",
        "kafka": "pid 77 not running at the start of the window",
    }


def _wait_for_both_snapshots(window: CpuWindow) -> None:
    deadline = time.monotonic() + 5
    while window.last is None and time.monotonic() < deadline:
        time.sleep(0.01)
    window.stop()


def test_the_window_counts_sagas_completed_between_its_snapshots(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, stat_line(500, "python", 1, utime=30, starttime=9))
    (proc / "self").mkdir()
    (proc / "self" / "stat").write_text(stat_line(500, "python", 1))
    window = CpuWindow({"bench client": Target(500), "orders": Target(None)}, proc=proc)
    now = time.time()
    window.start(start_at=now, end_at=now + 0.05)
    _wait_for_both_snapshots(window)

    figures = window.figures(
        [window.first_at - 1, window.first_at, window.last_at, window.last_at + 1],
        cores=2,
        load_started=window.first_at - 5,
    )
    assert figures["completed_sagas"] == 2
    assert figures["window_s"][0] == pytest.approx(5.0)
    assert figures["processes"]["bench client"]["cpu_s"] == 0.0  # the fake never ticks
    assert figures["unavailable"] == {"orders": "not running at the start of the window"}


def test_without_proc_or_a_finished_window_the_section_is_unavailable(tmp_path: Path) -> None:
    no_proc = CpuWindow({"bench client": Target(os.getpid())}, proc=tmp_path / "missing")
    now = time.time()
    no_proc.start(start_at=now, end_at=now)
    _wait_for_both_snapshots(no_proc)
    figures = no_proc.figures([], cores=2, load_started=now)
    assert figures["available"] is False and "not Linux" in figures["reason"]

    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "stat").write_text(stat_line(1, "init", 0))
    cut_short = CpuWindow({"bench client": Target(1)}, proc=tmp_path)
    cut_short.start(start_at=now + 60, end_at=now + 120)
    cut_short.stop()  # Ctrl-C before the window opened
    figures = cut_short.figures([], cores=2, load_started=now)
    assert figures == {"available": False, "reason": "the window did not run to its end"}


def _summary_with(cpu: dict[str, Any]) -> str:
    return saga_summary(
        {
            "offered_rate": 10.0,
            "completed_per_second": 10.0,
            "measured_sagas": 250,
            "finished": {"SHIPPED": 250},
            "unfinished": 0,
            "rejected": {},
            "end_to_end_ms": {"count": 0},
            "relay_ms": {"count": 0},
            "hops_ms": {},
            "cpu": cpu,
        }
    )


def test_the_summary_prints_a_row_per_process_and_the_total() -> None:
    cpu = cpu_figures(
        {"postgres": Reading(1, 0), "orders": Reading(2, 0), "relay-0": Reading(3, 0)},
        {"postgres": Reading(1, 1_108), "orders": Reading(2, 870), "relay-0": "pid 3 not running"},
        seconds=25.0,
        completed=0,
        ticks_per_second=100,
        cores=2,
    )
    lines = _summary_with(cpu).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("cpu (measured window"))
    assert "window 25.0 s, 2 cores)" in lines[header]
    assert lines[header].endswith("% of a core   ms per saga")
    assert lines[header + 1].split() == ["system", "under", "test", "79.1", "-"]
    assert lines[header + 2].split() == ["postgres", "44.3", "-"]
    assert lines[header + 3].split() == ["orders", "34.8", "-"]
    assert lines[header + 4].split() == ["harness", "0.0", "-"]
    assert lines[header + 5].split() == ["total", "counted", "79.1", "-"]
    assert "not counted: relay-0 (pid 3 not running at the end of the window)" in lines[-1]


def test_the_summary_says_why_there_are_no_cpu_figures() -> None:
    text = _summary_with({"available": False, "reason": "the window did not run to its end"})
    assert text.splitlines()[-1] == "cpu: unavailable (the window did not run to its end)"


def test_the_bench_targets_are_every_system_process_postgres_as_a_tree_and_kafka(
    tmp_path: Path,
) -> None:
    running = subprocess.Popen([sys.executable, "-c", "pass"])
    running.wait()
    system = System(
        database_url="postgresql://unused/x",
        kafka=KafkaSettings(bootstrap_servers="unused:1"),
        log_dir=tmp_path,
        env={},
        ports={},
        processes={
            "orders": Process("orders", [], {}, tmp_path / "orders.log", popen=running),
            "relay-0": Process("relay-0", [], {}, tmp_path / "relay-0.log"),
        },
    )
    targets = cpu_targets(system, LocalStack(state_dir=tmp_path, log=lambda _m: None))
    assert targets == {
        "orders": Target(running.pid),
        "relay-0": Target(None),  # never started
        "postgres": Target(None, tree=True),  # no server in this state dir
        "kafka": Target(None),
    }
