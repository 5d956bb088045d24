"""The store on its own: real SQLite files, the real writer thread, no server."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from chatd.store import Store, StoreUnavailable

SCHEMA = ["CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL);"]


@pytest.fixture(params=["file", "memory"])
def store(request, tmp_path):
    path = tmp_path / "sub" / "db.sqlite3" if request.param == "file" else None
    made = Store(path)
    made.open()
    made.migrate("test", SCHEMA)
    yield made
    made.close()


def test_writes_are_committed_in_batches_and_read_back_in_order(store):
    for i in range(1000):
        assert store.write("INSERT INTO t (b) VALUES (?)", (f"v{i}",))
    assert store.flush(10)
    assert store.committed == 1000
    rows = store.read("SELECT b FROM t ORDER BY a")
    assert [b for (b,) in rows] == [f"v{i}" for i in range(1000)]


def test_a_file_store_is_in_wal_mode_and_created_with_its_folder(tmp_path):
    store = Store(tmp_path / "new" / "folder" / "db.sqlite3")
    store.open()
    store.migrate("test", SCHEMA)
    store.close()
    with sqlite3.connect(tmp_path / "new" / "folder" / "db.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM chatd_schema WHERE owner = 'test'").fetchone() \
            == (1,)


def test_write_never_waits_for_the_commit(store):
    """The loop's side only queues: a thousand writes take no commit's time each."""
    gate = threading.Event()
    store.write(lambda conn: gate.wait(5))  # the writer is busy until we say so
    for i in range(1000):
        store.write("INSERT INTO t (b) VALUES (?)", (str(i),))
    assert store.queued > 0  # nothing was committed while we queued
    gate.set()
    assert store.flush(10)
    assert store.read("SELECT count(*) FROM t") == [(1000,)]


def test_a_slow_read_is_cut_at_the_read_timeout(store):
    store.read_timeout = 0.05
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="took over 50 ms"):
        store.read("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                   "SELECT max(x) FROM c")
    assert time.monotonic() - started < 5  # cut, not run to the end (it never ends)
    assert store.read("SELECT 1") == [(1,)]  # and the reader still works


def test_migrations_run_once_in_order_and_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "db.sqlite3"
    steps = [*SCHEMA, "ALTER TABLE t ADD COLUMN c TEXT;"]
    for _ in range(2):  # the second time finds both steps done
        store = Store(path)
        store.open()
        store.migrate("test", steps)
        store.close()
    store = Store(path)
    store.open()
    with pytest.raises(RuntimeError, match="version 2, newer than the 1"):
        store.migrate("test", SCHEMA)
    store.close()


def test_one_bad_statement_is_dropped_and_the_rest_of_its_batch_is_kept(store):
    store.write("INSERT INTO t (a, b) VALUES (1, 'first')")
    store.write("INSERT INTO t (a, b) VALUES (1, 'the same key again')")  # IntegrityError
    store.write("INSERT INTO nowhere VALUES (1)")  # no such table
    store.write("INSERT INTO t (a, b) VALUES (2, 'after')")
    assert store.flush(10)
    assert store.read("SELECT a, b FROM t ORDER BY a") == [(1, "first"), (2, "after")]
    assert store.rejected == 2
    assert not store.problem


def test_a_store_that_cannot_open_degrades_drops_past_its_queue_and_recovers(tmp_path):
    blocker = tmp_path / "in-the-way"
    blocker.write_text("a file where the database folder should be")
    reports: list[str | None] = []
    # One write per batch: the writer holds one while failing, the queue 100.
    store = Store(blocker / "db.sqlite3", queue_max=100, batch_max=1, on_problem=reports.append)
    store.open()
    store.write(SCHEMA[0])
    for i in range(300):
        store.write("INSERT INTO t (b) VALUES (?)", (str(i),))
    deadline = time.monotonic() + 5
    while not reports and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reports and "cannot open" in reports[0]
    assert store.dropped in (200, 201)  # 301 writes, 1 held, 100 waiting (or 99 + 1 in flight)
    with pytest.raises(StoreUnavailable):
        store.read("SELECT count(*) FROM t")
    blocker.unlink()
    blocker.mkdir()  # the disk "comes back"
    assert store.flush(15)
    assert reports[-1] is None  # recovery reported
    assert store.read("SELECT count(*) FROM t") == [(300 - store.dropped,)]
    store.close()


def test_close_commits_everything_queued(tmp_path):
    path = tmp_path / "db.sqlite3"
    store = Store(path, batch_seconds=0.5)
    store.open()
    store.migrate("test", SCHEMA)
    for i in range(100):
        store.write("INSERT INTO t (b) VALUES (?)", (str(i),))
    assert store.close(10)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (100,)


def test_a_corrupt_file_is_reported_not_raised(tmp_path):
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    reports: list[str | None] = []
    store = Store(path, on_problem=reports.append)
    store.open()
    store.write("SELECT 1")
    deadline = time.monotonic() + 5
    while not reports and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reports and "not a database" in str(reports[0])
    with pytest.raises(StoreUnavailable):
        store.read("SELECT 1 FROM sqlite_master")
    path.rename(tmp_path / "corrupt.sqlite3")  # the operator moves it aside
    store.write("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    store.write("INSERT INTO t (b) VALUES ('fresh')")
    assert store.flush(15)  # a new file, written
    assert reports[-1] is None
    assert store.read("SELECT b FROM t") == [("fresh",)]  # and read: not the old file
    store.close(0.5)


def test_data_dir_is_not_touched_by_a_memory_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = Store(None)
    store.open()
    store.migrate("test", SCHEMA)
    store.write("INSERT INTO t (b) VALUES ('x')")
    assert store.flush(5)
    assert store.read("SELECT b FROM t") == [("x",)]
    store.close()
    assert list(Path(tmp_path).iterdir()) == []


def test_rows_inserted_together_arrive_complete_and_in_order(store):
    for i in range(1000):
        assert store.insert("t", ("b",), (f"r{i}",))
    store.write("INSERT INTO t (b) VALUES ('plain')")  # a statement between runs of rows
    for i in range(1000, 1130):
        store.insert("t", ("b",), (f"r{i}",))
    assert store.flush(10)
    rows = [b for (b,) in store.read("SELECT b FROM t ORDER BY a")]
    assert rows == [f"r{i}" for i in range(1000)] + ["plain"] + [f"r{i}" for i in range(1000, 1130)]
    assert store.done == store.accepted == 1131


def test_insert_takes_plain_names_only(store):
    with pytest.raises(ValueError, match="plain SQL names"):
        store.insert("t; DROP TABLE t", ("b",), ("x",))
    with pytest.raises(ValueError, match="1 columns, 2 values"):
        store.insert("t", ("b",), ("x", "y"))

