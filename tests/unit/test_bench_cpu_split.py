"""The saga bench's CPU split: PostgreSQL by backend, system under test against harness, machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from saga_harness.bench.cpu import Target, cpu_figures, descendants, take_readings
from saga_harness.bench.cpu_split import (
    BackendSample,
    MachineTicks,
    backend_label,
    read_machine,
    sample_backends,
    split_backends,
)
from saga_harness.bench.cpu_window import CpuWindow
from saga_harness.bench.spawn import HARNESS_LABELS
from tests.unit.test_bench_cpu import _summary_with, fake_proc, stat_line, table

# A postmaster (100) with a checkpointer, backends of orders, of the provider simulator and of
# stock (which exits within the window), and a relay's backend that connects within it. Another
# server (200) has a backend that pg_stat_activity of ours would never list, but a careless
# mapping could.
START = (
    stat_line(1, "init", 0),
    stat_line(100, "postgres", 1, utime=10, stime=5, cutime=100, cstime=20, starttime=50),
    stat_line(101, "postgres: checkpointer", 100, utime=5, starttime=51),
    stat_line(102, "postgres: orders", 100, utime=40, stime=10, starttime=60),
    stat_line(103, "postgres: provider", 100, utime=20, starttime=61),
    stat_line(104, "postgres: stock", 100, utime=30, starttime=62),
    stat_line(200, "postgres", 1, starttime=5),
    stat_line(201, "postgres: elsewhere", 200, utime=7, starttime=6),
)
END = (
    stat_line(1, "init", 0),
    # 104 ended at 50 ticks (20 of them in the window); the postmaster reaped it.
    stat_line(100, "postgres", 1, utime=12, stime=6, cutime=150, cstime=20, starttime=50),
    stat_line(101, "postgres: checkpointer", 100, utime=8, starttime=51),  # 3
    stat_line(102, "postgres: orders", 100, utime=60, stime=15, starttime=60),  # 25
    stat_line(103, "postgres: provider", 100, utime=26, starttime=61),  # 6
    stat_line(105, "postgres: relay", 100, utime=4, stime=1, starttime=90),  # 5, all in the window
    stat_line(200, "postgres", 1, starttime=5),
    stat_line(201, "postgres: elsewhere", 200, utime=99, starttime=6),
)
NAMES_START = {102: "orders:wakeup", 103: "payment-provider", 104: "stock", 201: "orders"}
NAMES_END = {102: "orders", 103: "payment-provider", 105: "relay-0:stock", 201: "orders"}


def backends_of(lines: tuple[str, ...], names: dict[int, str]) -> dict[int, BackendSample]:
    procs = table(*lines)
    return sample_backends((procs[p] for p in descendants(procs, 100)), names)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("orders", "postgres (orders)"),
        ("orders:wakeup", "postgres (orders)"),
        ("relay-0:stock:listen", "postgres (relay-0)"),
        ("payment-provider", "postgres (payment-provider)"),
        ("bench:backlog", "postgres (bench)"),
        ("", "postgres (unnamed)"),
    ],
)
def test_a_backend_is_grouped_by_its_application_name_up_to_the_first_colon(
    name: str, label: str
) -> None:
    assert backend_label(name) == label


def test_only_named_live_backends_of_our_server_are_sampled() -> None:
    procs = table(*START, stat_line(106, "postgres: gone", 100, utime=3, state="Z"))
    members = (procs[p] for p in descendants(procs, 100))
    sampled = sample_backends(members, {**NAMES_START, 106: "stock"})
    assert sampled == {
        102: BackendSample(60, 50, "postgres (orders)"),
        103: BackendSample(61, 20, "postgres (payment-provider)"),
        104: BackendSample(62, 30, "postgres (stock)"),
    }, "not the checkpointer (unnamed), the zombie, nor the other server's backend"


def test_a_backend_counts_its_delta_whole_if_new_and_nothing_once_gone() -> None:
    split = split_backends(backends_of(START, NAMES_START), backends_of(END, NAMES_END))
    assert split.ticks == {
        "postgres (orders)": 25,
        "postgres (payment-provider)": 6,
        "postgres (relay-0)": 5,
    }
    assert (split.started, split.exited) == (1, 1)


def test_a_reused_pid_is_a_new_backend_not_a_delta() -> None:
    first = {7: BackendSample(starttime=10, ticks=500, label="postgres (orders)")}
    last = {7: BackendSample(starttime=99, ticks=4, label="postgres (stock)")}
    split = split_backends(first, last)
    assert split.ticks == {"postgres (stock)": 4}
    assert (split.started, split.exited) == (1, 1)


def split_figures(**more: Any) -> dict[str, Any]:
    targets = {"postgres": Target(100, tree=True), "provider": Target(200)}
    return cpu_figures(
        take_readings(targets, table(*START)),
        take_readings(targets, table(*END)),
        seconds=1.0,
        completed=10,
        ticks_per_second=100,
        cores=2,
        backends=(backends_of(START, NAMES_START), backends_of(END, NAMES_END)),
        harness={"provider", "postgres (payment-provider)"},
        **more,
    )


def test_postgres_is_split_into_its_groups_and_the_rest_which_the_system_keeps() -> None:
    figures = split_figures()
    processes = figures["processes"]
    assert "postgres" not in processes
    assert {label: f["cpu_s"] for label, f in processes.items()} == {
        # postmaster 3 + checkpointer 3 + the exited stock backend's last 20 ticks
        "postgres (other)": 0.26,
        "postgres (orders)": 0.25,
        "postgres (payment-provider)": 0.06,
        "postgres (relay-0)": 0.05,
        "provider": 0.0,
    }
    assert figures["postgres"]["cpu_s"] == 0.62, "the groups add up to the whole tree"
    assert figures["postgres"]["backends_connected_in_window"] == 1
    assert figures["postgres"]["backends_gone_in_window"] == 1
    assert figures["total"]["cpu_s"] == 0.62
    sut, harness = figures["system_under_test"], figures["harness"]
    assert sut["labels"] == [
        "postgres (orders)",
        "postgres (other)",
        "postgres (relay-0)",
    ]
    assert (sut["cpu_s"], sut["ms_per_saga"]) == (0.56, 56.0)
    assert harness["labels"] == ["postgres (payment-provider)", "provider"]
    assert (harness["cpu_s"], harness["ms_per_saga"]) == (0.06, 6.0)


def test_without_backend_readings_postgres_stays_whole_and_counts_as_the_system() -> None:
    targets = {"postgres": Target(100, tree=True)}
    figures = cpu_figures(
        take_readings(targets, table(*START)),
        take_readings(targets, table(*END)),
        seconds=1.0,
        completed=10,
        ticks_per_second=100,
        cores=2,
    )
    assert list(figures["processes"]) == ["postgres"]
    assert figures["system_under_test"]["cpu_s"] == 0.62
    assert figures["harness"] == {
        "cpu_s": 0.0,
        "pct_of_core": 0.0,
        "ms_per_saga": 0.0,
        "labels": [],
    }
    assert "postgres" not in figures, "no split to describe"


def test_proc_stat_gives_every_cores_busy_and_total_time(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text(
        "cpu  100 5 50 800 40 3 2 1 7 0\ncpu0 50 2 25 400 20 1 1 0 3 0\nintr 1 2\n"
    )
    # busy: user nice system irq softirq steal (guest is inside user); idle + iowait are not
    assert read_machine(tmp_path) == MachineTicks(busy=161, total=1001)
    (tmp_path / "stat").write_text("nonsense\n")
    assert read_machine(tmp_path) is None
    assert read_machine(tmp_path / "missing") is None


def test_the_machine_figure_is_every_process_and_says_what_was_not_counted() -> None:
    figures = split_figures(machine=(MachineTicks(1_000, 10_000), MachineTicks(1_150, 10_200)))
    assert figures["machine"] == {
        "cpu_s": 1.5,
        "pct_of_core": 150.0,
        "ms_per_saga": 150.0,
        "pct_of_cores": 75.0,
        "elsewhere_cpu_s": 0.88,  # 1.5 s busy, 0.62 s of it counted
    }
    assert "machine" not in split_figures(machine=(None, MachineTicks(1, 2)))


def _wait(window: CpuWindow) -> None:
    deadline = time.monotonic() + 5
    while window.last is None and time.monotonic() < deadline:
        time.sleep(0.01)
    window.stop()


def _windowed_proc(root: Path, lines: tuple[str, ...], busy: int) -> None:
    for child in root.iterdir():
        if child.name.isdigit():
            (child / "stat").unlink()
            child.rmdir()
    fake_proc(root, *lines)
    (root / "stat").write_text(f"cpu  {busy} 0 0 {10_000 + busy} 0 0 0 0 0 0\n")


def test_the_window_reads_names_proc_and_machine_at_each_end(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "stat").write_text(stat_line(1, "init", 0))
    _windowed_proc(tmp_path, START, busy=1_000)
    calls: list[int] = []
    closed: list[bool] = []

    class Names:
        def __call__(self) -> dict[int, str]:
            calls.append(1)
            if len(calls) == 2:  # the end of the window: /proc moves on meanwhile
                _windowed_proc(tmp_path, END, busy=1_100)
                return NAMES_END
            return NAMES_START

        def close(self) -> None:
            closed.append(True)

    window = CpuWindow(
        {"postgres": Target(100, tree=True)},
        proc=tmp_path,
        backend_names=Names(),
        harness=HARNESS_LABELS,
    )
    now = time.time()
    window.start(start_at=now, end_at=now + 0.05)
    _wait(window)
    figures = window.figures([], cores=2, load_started=now)
    assert figures["processes"]["postgres (orders)"]["cpu_s"] == 0.25
    assert figures["harness"]["labels"] == ["postgres (payment-provider)"]
    assert figures["machine"]["cpu_s"] == 1.0
    assert closed == [True], "the names' connection is closed when the window ends"


def test_unreadable_names_leave_postgres_whole_and_say_why(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "stat").write_text(stat_line(1, "init", 0))
    _windowed_proc(tmp_path, START, busy=1_000)

    def names() -> dict[int, str]:
        raise OSError("connection refused")

    window = CpuWindow({"postgres": Target(100, tree=True)}, proc=tmp_path, backend_names=names)
    now = time.time()
    window.start(start_at=now, end_at=now + 0.05)
    _wait(window)
    figures = window.figures([], cores=2, load_started=now)
    assert list(figures["processes"]) == ["postgres"]
    assert "connection refused" in figures["postgres_split_unavailable"]
    assert figures["system_under_test"]["labels"] == ["postgres"]


def test_the_summary_groups_processes_by_role_and_adds_the_machine() -> None:
    figures = split_figures(machine=(MachineTicks(1_000, 10_000), MachineTicks(1_150, 10_200)))
    lines = _summary_with(figures).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("cpu (measured window"))
    rows = [line.split("  ") for line in lines[header + 1 :]]
    shown = [[part.strip() for part in row if part.strip()] for row in rows]
    assert shown[:9] == [
        ["system under test", "56.0", "56.0"],
        ["postgres (other)", "26.0", "26.0"],
        ["postgres (orders)", "25.0", "25.0"],
        ["postgres (relay-0)", "5.0", "5.0"],
        ["harness", "6.0", "6.0"],
        ["postgres (payment-provider)", "6.0", "6.0"],
        ["provider", "0.0", "0.0"],
        ["total counted", "62.0", "62.0"],
        [
            "machine (/proc/stat, every process)",
            "150.0",
            "150.0",
            "(75.0% of the cores; 0.88 s elsewhere)",
        ],
    ]
    assert "whole tree 0.62 s; 1 backends connected and 1 gone in the window" in lines[header + 10]
