"""bench/stages.py and bench/profile_load.py must keep working (issue 24: the per-stage cost).

stages.py runs for real, as a process, with tiny counts: every stage of a line's path
is in its JSON with a positive figure, and so is the whole path.  It never asserts a
speed (DESIGN.md section 6): the figures are the bench's answer, not the test's.
profile_load.py needs py-spy and both cores, so the suite only checks that it starts
(``--help``), that it reads py-spy's raw format right (its parser, in-process) and that
``--cpu`` reads each thread's CPU time from /proc (on this process's own threads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from bench_modules import bench_module

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

#: Every stage the issue asks for (name prefixes in the JSON), in the order of a line.
STAGES = (
    "framing (LineFramer.feed",
    "decode_line, ASCII",
    "decode_line, non-ASCII UTF-8",
    "parse + intake to ChatDomain.say",
    "ChatDomain.new_event",
    "hook chatd_route_message",
    "hook chatd_filter_message",
    "hook chatd_message",
    "history _record",
    "one guarded call of an empty hook impl",
    "ChatDomain.say",
    "render line",
    "render jsonl",
    "render IRC",
    "fan-out to 100: end-of-tick flush",
    "fan-out to 100, 10 lines a tick",
    "fan-out to 100, 100 lines a tick",
    "100 send() syscalls alone",
    "the tick itself",
)


@pytest.fixture(scope="module")
def stages_json(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("stages") / "stages.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "stages.py"), "--quick", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"stages.py failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    assert "WHOLE PATH" in done.stdout and "sum of the stages" in done.stdout, done.stdout
    return json.loads(out.read_text())


def test_every_stage_is_measured_with_a_positive_figure(stages_json: dict) -> None:
    names = [stage["name"] for stage in stages_json["stages"]]
    for prefix in STAGES:
        found = [s for s in stages_json["stages"] if s["name"].startswith(prefix)]
        assert found, f"stage {prefix!r} missing from {names}"
        for stage in found:
            assert stage["wall_us_per_line"] > 0, stage
            assert stage["cpu_us_per_line"] >= 0, stage


def test_the_whole_path_and_the_sum_of_the_stages_are_reported(stages_json: dict) -> None:
    whole = stages_json["whole_path"]
    assert whole["members"] == 100 and whole["lines_per_tick"] == 1
    assert whole["wall_us_per_line"] > 0
    assert stages_json["sum_of_stages_us"] > 0
    assert [c["lines_per_tick"] for c in stages_json["coalesced"]] == [10, 100]
    for row in stages_json["coalesced"]:
        assert row["wall_us_per_line"] > 0 and row["sum_of_stages_us"] > 0, row


def test_the_writer_threads_cost_per_row_and_the_machine_are_reported(stages_json: dict) -> None:
    writer = stages_json["writer_thread"]
    assert [w["rows_per_batch"] for w in writer] == [5, 100]
    for row in writer:
        assert row["writer_cpu_us_per_row"] > 0 and row["rows"] >= row["rows_per_batch"], row
    machine = stages_json["machine"]
    assert machine["python"] and machine["chatd_commit"] != "unknown", machine


def test_profile_help_names_its_options() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "profile_load.py"), "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for option in ("--seconds", "--rate", "--scenario", "--config-variant", "--report",
                   "--cpu"):
        assert option in done.stdout, option


@pytest.fixture
def profile() -> Iterator[ModuleType]:
    """bench/profile_load.py as a module (not named ``profile``: that is the stdlib's)."""
    with bench_module("profile_load.py", "bench_profile") as module:
        yield module


RAW = """\
thread (101): MainThread;run (chatd/reactor.py:280);say (chatd/chat/domain.py:430);\
new_event (chatd/chat/domain.py:164) 6
thread (101): MainThread;run (chatd/reactor.py:281);say (chatd/chat/domain.py:433) 3
thread (101): MainThread;run (chatd/reactor.py:290);flush (chatd/delivery.py:620) 1
thread (102): chatd-store;_write (chatd/store.py:600);Condition.wait (threading.py:327) 40
thread (102): chatd-store;_write (chatd/store.py:610);insert_rows (chatd/store_sqlite.py:170) 2
"""


def test_profile_reads_raw_stacks_per_thread_by_function(profile: ModuleType) -> None:
    threads = profile.parse_raw(RAW)
    loop = threads["thread (101): MainThread"]
    assert loop.samples == 10 and loop.waiting == 0
    # Line numbers merged: say's two lines are one function.
    assert loop.own["say (chatd/chat/domain.py)"] == 3
    assert loop.own["new_event (chatd/chat/domain.py)"] == 6
    assert loop.inclusive["say (chatd/chat/domain.py)"] == 9
    assert loop.inclusive["run (chatd/reactor.py)"] == 10
    writer = threads["thread (102): chatd-store"]
    # A thread waiting in Condition.wait is not busy: left out of its shares.
    assert writer.samples == 2 and writer.waiting == 40
    assert writer.own == {"insert_rows (chatd/store_sqlite.py)": 2}
    text = profile.report(threads, 5, 20)
    assert "60.0%  new_event (chatd/chat/domain.py)" in text
    assert "90.0%  say (chatd/chat/domain.py)" in text
    assert "40 waiting (left out)" in text


def test_profile_without_py_spy_says_so_and_exits_2(
    profile: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(profile, "find_py_spy", lambda: None)
    assert profile.main(["--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert "py-spy is not installed" in err and "[bench]" in err


def test_profile_cpu_reads_each_threads_cpu_and_gives_it_per_message(
    profile: ModuleType,
) -> None:
    """A thread that spins shows up with its own CPU; the main thread is named as such;
    the per-message figure is the CPU over the messages said meanwhile."""
    done = threading.Event()
    native: list[int] = []

    def spin() -> None:
        native.append(threading.get_native_id())
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        done.wait(10)

    before = profile.thread_cpu(os.getpid())
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = profile.thread_cpu(os.getpid())
            if native and sum(after[native[0]][1:]) >= 0.25:
                break
            time.sleep(0.05)
    finally:
        done.set()
        worker.join(10)
    assert before[os.getpid()][0] == "main thread"
    name, user, system = after[native[0]]
    assert user + system >= 0.25, after[native[0]]
    # A thread that started after the first reading has nothing to compare with.
    before[native[0]] = (name, 0.0, 0.0)
    text = profile.cpu_report(before, after, 2.0, 1000.0)
    spun = next(line for line in text.splitlines() if f"({native[0]})" in line)
    per_message = (user + system) * 1e6 / (1000.0 * 2.0)
    assert f"together {per_message:.2f} us" in spun, spun
    assert "1,000 messages/s" in text.splitlines()[0]


@pytest.mark.parametrize("where", [[], ["--disk"], ["--disk", "--drop-index"]])
def test_sqlite_rows_measures_every_way_in_memory_and_on_disk(where: list[str]) -> None:
    """bench/sqlite_rows.py (what a history row costs the writer) runs with tiny counts:
    a positive figure per way, and the header says where the table was."""
    done = subprocess.run([sys.executable, str(BENCH / "sqlite_rows.py"), "--rows", "4",
                           "--total", "40", "--repeat", "1", *where],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    header, columns, row = done.stdout.splitlines()
    assert ("a WAL file" if where else "in memory") in header, header
    assert ("no room index" in header) == ("--drop-index" in where), header
    assert columns.split() == ["rows/batch", "store", "per-count", "executemany"]
    figures = row.split()
    assert figures[0] == "4" and all(float(f) > 0 for f in figures[1:]), row
