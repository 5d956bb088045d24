"""The store on its own: real SQLite files, the real writer thread, no server."""

from __future__ import annotations

import ctypes
import sqlite3
import sys
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



# -- the writer never dies (issue 18 rule 2) -----------------------------------------


def _owned(store: Store, owner: str) -> None:
    """Make every write from now on look queued by plugin ``owner``."""
    store.owner = lambda: owner


def test_a_value_sqlite_cannot_store_costs_only_its_own_write(store, caplog):
    """A lone surrogate (no UTF-8 for it) or an integer past 64 bits, among good
    writes, as a statement, as a row and in a run of the same statement: the bad
    ones are dropped, counted by owner and logged with it; every good one is on
    disk; the writer is alive and takes later writes."""
    good = [f"good {i}" for i in range(6)]
    _owned(store, "poison")
    store.write("INSERT INTO t (b) VALUES (?)", (good[0],))
    store.write("INSERT INTO t (b) VALUES (?)", ("\ud800",))  # in a run of 3
    store.write("INSERT INTO t (b) VALUES (?)", (good[1],))
    store.insert("t", ("b",), (good[2],))
    store.insert("t", ("b",), ("lone \udfff",))  # in a multi-row INSERT
    store.insert("t", ("b",), (good[3],))
    store.write("INSERT INTO t (a, b) VALUES (?, ?)", (2**70, "too big"))
    _owned(store, "history")
    store.write("INSERT INTO t (b) VALUES (?)", (good[4],))
    assert store.flush(10)
    assert store.rejected == 3
    assert store.rejected_by == {"poison": 3}
    assert store.alive
    store.write("INSERT INTO t (b) VALUES (?)", (good[5],))  # the writer still writes
    assert store.flush(10)
    assert [b for (b,) in store.read("SELECT b FROM t ORDER BY a")] == good
    assert store.committed == 6 and store.done == store.accepted == 9
    dropped = [r.getMessage() for r in caplog.records if "was dropped" in r.getMessage()]
    assert dropped[0].startswith("store: a write by poison was dropped: UnicodeEncodeError"), \
        dropped
    assert "INSERT INTO t (b) VALUES (?)" in dropped[0]
    assert any("OverflowError" in line for line in dropped), dropped
    assert not any(r.exc_info for r in caplog.records)  # a refused value needs no traceback


def test_a_write_function_that_raises_is_dropped_and_the_rest_of_its_batch_kept(store, caplog):
    """A plugin's write function with a bug (an exception, ``sys.exit``, a
    ``KeyboardInterrupt``, closing the store's connection): dropped, counted,
    logged with its owner and traceback; the writes around it are committed, the
    thread lives (had it died, every restart would meet the same write again)."""

    def buggy(conn):
        conn.execute("INSERT INTO t (b) VALUES ('half done')")  # undone with it
        raise ValueError("a plugin bug")

    def exits(conn):
        raise SystemExit(3)

    def interrupts(conn):
        raise KeyboardInterrupt

    def closes(conn):
        conn.close()

    _owned(store, "tidy")
    store.write("INSERT INTO t (b) VALUES ('before')")
    store.write(buggy)
    store.write(exits)
    store.write(interrupts)
    store.write(closes)
    store.write("INSERT INTO t (b) VALUES ('after')")
    assert store.flush(10)
    assert [b for (b,) in store.read("SELECT b FROM t ORDER BY a")] == ["before", "after"]
    assert store.rejected_by == {"tidy": 4} and store.alive
    store.write("INSERT INTO t (b) VALUES ('later')")
    assert store.flush(10)
    assert store.read("SELECT count(*) FROM t") == [(3,)]
    logged = {r.getMessage().split(": ")[2].split(":")[0]: r for r in caplog.records
              if "a write by tidy was dropped" in r.getMessage()}
    assert set(logged) == {"ValueError", "SystemExit", "KeyboardInterrupt",
                           "ProgrammingError"}, logged
    assert "buggy" in logged["ValueError"].getMessage()
    assert logged["ValueError"].exc_info  # a plugin's bug: its traceback, to find it


def test_bad_writes_are_logged_once_a_minute_per_owner_and_kind(store, caplog):
    """A plugin that queues a bad write per chat line cannot flood the log: one line
    per owner and kind of error a minute, every write still counted."""
    _owned(store, "noisy")
    for i in range(50):
        store.write("INSERT INTO t (b) VALUES (?)", (f"\ud800{i}",))
    _owned(store, "other")
    store.write("INSERT INTO t (b) VALUES (?)", ("\ud800",))
    assert store.flush(10)
    assert store.rejected_by == {"noisy": 50, "other": 1}
    lines = [r.getMessage() for r in caplog.records if "was dropped" in r.getMessage()]
    assert [line.split()[4] for line in lines] == ["noisy", "other"], lines


def test_a_bad_write_after_a_migration_in_its_batch_writes_nothing_twice(tmp_path):
    """A batch holding a write, a migration and a bad write: the part before the
    migration is committed once, not again when the batch is redone write by write."""
    store = Store(tmp_path / "db.sqlite3")
    store.open()
    store.migrate("test", SCHEMA)
    entered, gate = threading.Event(), threading.Event()

    def hold(conn):
        entered.set()
        gate.wait(10)

    store.write(hold)
    assert entered.wait(10)  # the writer is busy: what follows gathers in one batch
    store.write("INSERT INTO t (b) VALUES ('once')")
    migrating = threading.Thread(target=store.migrate,
                                 args=("other", ["CREATE TABLE u (x INTEGER);"]))
    migrating.start()
    deadline = time.monotonic() + 10
    while store.queued < 2:  # the migration is queued behind the write
        assert time.monotonic() < deadline
        time.sleep(0.001)
    store.write("INSERT INTO t (b) VALUES (?)", ("\ud800",))
    gate.set()
    migrating.join(10)
    assert store.flush(10)
    assert store.read("SELECT b FROM t") == [("once",)]
    assert store.read("SELECT version FROM chatd_schema WHERE owner = 'other'") == [(1,)]
    assert store.rejected == 1
    store.close()


class Killed(BaseException):
    """What a test forces into the writer thread from outside."""


def _writer_thread(store: Store) -> threading.Thread:
    """The store's writer thread, as a write function sees it."""
    writers: list[threading.Thread] = []
    store.write(lambda conn: writers.append(threading.current_thread()))
    assert store.flush(10)
    return writers[0]


def _kill_when_idle(thread: threading.Thread, where: str = "_write") -> None:
    """Force :class:`Killed` into the writer while it waits: for work (``_write``,
    the store's own loop) or before retrying a failing disk (``_back_off``) --
    not in a write, where anything raised is the write's fault and dropped with
    it.  It is raised when the thread wakes."""
    deadline = time.monotonic() + 10
    while not _waiting_in(thread, where):
        assert time.monotonic() < deadline, f"the writer never waited in {where}"
        time.sleep(0.001)
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                      ctypes.py_object(Killed))
    assert done == 1


def _waiting_in(thread: threading.Thread, function: str) -> bool:
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:  # the innermost frame of store.py says where it is
        if frame.f_code.co_filename.endswith("store.py"):
            return frame.f_code.co_name == function
        frame = frame.f_back
    return False


def test_a_writer_thread_killed_by_force_is_restarted_by_the_watchdog_and_loses_nothing(
        tmp_path, caplog):
    """The writer thread dies (an exception forced into it): :meth:`Store.watch` (the
    server calls it every second) sees it and starts a new writer, which commits
    what was queued meanwhile and every later write."""
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    store.open()
    store.migrate("test", SCHEMA)
    assert not store.watch()  # alive: nothing to do
    store.write("INSERT INTO t (b) VALUES ('before')")
    writer = _writer_thread(store)
    _kill_when_idle(writer)
    store.write("INSERT INTO t (b) VALUES ('wakes it into the exception')")
    writer.join(10)
    assert not writer.is_alive() and not store.alive
    store.write("INSERT INTO t (b) VALUES ('queued while it was dead')")
    assert store.watch()
    assert store.alive and store.restarts == 1
    store.write("INSERT INTO t (b) VALUES ('after')")
    assert store.flush(10)
    assert [b for (b,) in store.read("SELECT b FROM t ORDER BY a")] == [
        "before", "wakes it into the exception", "queued while it was dead", "after"]
    assert store.rejected == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("the writer thread stopped (Killed)" in m for m in messages), messages
    assert any("the writer thread had stopped; started a new one" in m for m in messages)
    store.close()
    with sqlite3.connect(path) as conn:  # on disk, for the next process
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (4,)


def test_a_flush_with_nothing_waiting_is_done_at_once_however_short_its_timeout(
        tmp_path, monkeypatch):
    """A reload or shutdown with a tiny ``shutdown_timeout_seconds`` (its floor) and
    nothing written must not report "0 writes could not be committed": with nothing
    accepted waiting there is no turn of the writer to wait for (found by
    tests/test_settings_work.py under load)."""
    store = Store(tmp_path / "db.sqlite3")
    store.open()
    store.migrate("test", SCHEMA)
    store.write("INSERT INTO t (b) VALUES (?)", ("one",))
    assert store.flush(10)
    handed: list[object] = []
    real_hand_over = Store._hand_over
    monkeypatch.setattr(Store, "_hand_over",  # a writer that never answers
                        lambda self, item, urgent=False: handed.append(item))
    assert store.flush(0.001)  # nothing waits: done at once
    assert handed == []
    store._pending.append(("INSERT INTO t (b) VALUES (?)", ("two",), None))
    store.accepted += 1
    assert not store.flush(0.001)  # something waits and the writer never answers
    monkeypatch.setattr(Store, "_hand_over", real_hand_over)
    store._pending.clear()
    store.accepted -= 1
    assert store.close(10)


def test_flush_and_close_restart_a_dead_writer_first(tmp_path):
    """A shutdown right after the writer died still commits what was queued."""
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    store.open()
    store.migrate("test", SCHEMA)
    writer = _writer_thread(store)
    _kill_when_idle(writer)
    for i in range(10):
        store.write("INSERT INTO t (b) VALUES (?)", (str(i),))
    writer.join(10)
    assert store.close(10)
    assert store.restarts == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)


def test_a_writer_killed_while_the_disk_fails_hands_its_batch_to_the_next(tmp_path):
    """The writer dies holding a batch it could not commit (the database cannot be
    opened: it waits to retry): the writer :meth:`Store.watch` starts takes that
    batch over and commits it, once and in order, when the disk is back."""
    blocker = tmp_path / "in-the-way"
    blocker.write_text("a file where the database folder should be")
    store = Store(blocker / "db.sqlite3")
    others = set(threading.enumerate())
    store.open()
    [writer] = [t for t in threading.enumerate() if t not in others]
    writers: list[threading.Thread] = []
    store.write(lambda conn: writers.append(threading.current_thread()))
    store.write(SCHEMA[0])
    for i in range(5):
        store.write("INSERT INTO t (b) VALUES (?)", (f"held {i}",))
    deadline = time.monotonic() + 10
    while not store.problem:  # the writer holds the batch, failing to open the file
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _kill_when_idle(writer, "_back_off")
    writer.join(10)
    assert not store.alive
    blocker.unlink()
    blocker.mkdir()  # the disk "comes back"
    assert store.watch()
    store.write("INSERT INTO t (b) VALUES ('later')")
    assert store.flush(15)
    assert [b for (b,) in store.read("SELECT b FROM t ORDER BY a")] == [
        *(f"held {i}" for i in range(5)), "later"]
    assert len(writers) == 1 and writers[0] is not writer  # run once, by the new writer
    store.close()
