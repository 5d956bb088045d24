"""The store: one SQLite database for what must outlive a restart, never in the loop's way.

History, registered nicks and rooms, bans: plugins keep them here (through
``server.store``), in tables of their own, created and upgraded by numbered
migration steps.  Two rules shape this module:

* **The loop never waits on the disk.**  :meth:`Store.write` puts a statement
  on a bounded queue and returns; one writer thread takes what has gathered and
  commits it as one transaction, at most ``batch_seconds`` after the first
  statement of the batch.  That window is also what a ``kill -9`` can lose
  (WAL mode, ``synchronous=NORMAL``: a commit survives the process dying; only
  an operating-system crash or power loss can take the last ones).
* **A bad disk degrades chatd, it does not stop it.**  A full disk, a
  read-only file or a corrupt database makes the writer keep its batch and
  retry with a growing pause; writes arriving meanwhile wait in the queue, and
  past ``queue_max`` they are dropped and counted (memory stays bounded).  The
  problem is reported once through ``on_problem`` (the server logs it, tells
  operators and exports it as a metric) and so is the recovery.

Reads happen on the loop, on a connection of their own (WAL: readers never
wait for the writer), and are cut after ``read_timeout`` by SQLite's progress
handler, so a read costs the loop at most that.  A read that fails or is cut
raises :class:`StoreUnavailable`; the caller says so to whoever asked.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("chatd.store")

__all__ = ["Store", "StoreUnavailable", "TableGuard", "is_disk_trouble"]

#: Pause before retrying a failed commit or open; doubles up to the maximum.
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0

_memory_names = itertools.count(1)


class StoreUnavailable(Exception):
    """A read could not be answered now (the database is unavailable, or too slow)."""


class _Barrier:
    """Queued behind writes: set once everything queued before it is committed."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class _Migration:
    """Bring ``owner``'s tables to ``len(steps)``, one step per transaction."""

    __slots__ = ("done", "error", "guard", "owner", "steps")

    def __init__(self, owner: str, steps: Sequence[str], guard: TableGuard | None = None) -> None:
        self.owner = owner
        self.steps = tuple(steps)
        self.guard = guard
        self.done = threading.Event()
        self.error: str | None = None


_STOP = object()
#: First element of a queued row insert: ``(_ROW, statement prefix, values)``.
_ROW = object()
#: Rows per multi-row INSERT (at most; SQLite allows 32,766 values per statement).
#: Each statement step releases and retakes the GIL, and while the event loop is
#: busy, retaking it waits for the interpreter's switch interval (5 ms): so the
#: writer's throughput is rows per statement, not rows per second of SQLite work.
ROWS_PER_INSERT = 1000
_MAX_VALUES = 32766
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: What a write item is: a statement and its parameters, or a function run on the
#: writer's connection inside the batch's transaction.
WriteItem = tuple[str, Sequence[Any]] | Callable[[sqlite3.Connection], None]


class Store:
    """A SQLite database with a batching writer thread; see the module docstring.

    ``path`` None keeps the database in memory (gone with the process: tests, or
    a server configured to remember nothing).  ``post`` hands a callable to the
    loop from another thread (``reactor.call_soon_threadsafe``); problem reports
    go through it, so ``on_problem`` always runs on the loop.
    """

    __slots__ = (
        "_deadline", "_inserts", "_keeper", "_pending", "_post", "_reader", "_thread",
        "_urgent", "_uri",
        "_wake", "accepted", "batch_max", "batch_seconds", "committed", "dropped",
        "failures", "on_problem", "path", "problem", "queue_max", "read_timeout", "rejected",
        "synchronous",
    )

    def __init__(
        self,
        path: Path | None,
        *,
        batch_seconds: float = 0.005,
        batch_max: int = 5000,
        queue_max: int = 100_000,
        read_timeout: float = 0.02,
        synchronous: str = "NORMAL",
        post: Callable[[Callable[[], None]], None] | None = None,
        on_problem: Callable[[str | None], None] | None = None,
    ) -> None:
        self.path = path
        self.batch_seconds = batch_seconds
        self.batch_max = batch_max
        self.read_timeout = read_timeout
        self.synchronous = synchronous
        self._post = post
        #: Called on the loop with the problem's description, then with None once
        #: writing works again.
        self.on_problem = on_problem
        self.queue_max = queue_max
        # The hand-off: a deque (appends and pops are atomic) and an event that wakes
        # the writer when it sleeps with nothing to do; a queue.Queue's lock and
        # condition per write would cost the loop more than the write itself.
        self._pending: deque[Any] = deque()
        self._wake = threading.Event()
        #: Set when someone waits for the commit (flush, migrate, close): the writer
        #: stops gathering and commits at once.
        self._urgent = threading.Event()
        self._inserts: dict[tuple[str, tuple[str, ...]], str] = {}
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._deadline = 0.0
        if path is None:
            # A named shared-cache memory database: the writer's and the reader's
            # connections see the same data.
            self._uri = f"file:chatd-memory-{next(_memory_names)}?mode=memory&cache=shared"
            self._keeper = sqlite3.connect(self._uri, uri=True, check_same_thread=False)
        else:
            self._uri = path.resolve().as_uri()
            self._keeper = None
        #: The current problem ("" when there is none); written by the writer thread.
        self.problem = ""
        #: Statements committed, dropped (queue full), rejected by SQLite (a bad
        #: statement: logged and dropped), and failed commit attempts (retried).
        self.committed = 0
        self.dropped = 0
        self.rejected = 0
        self.failures = 0
        #: Writes accepted so far (the number of the last one; see :attr:`done`).
        self.accepted = 0

    # -- life --------------------------------------------------------------------------

    def open(self) -> None:
        """Start the writer thread (it opens the database, and retries until it can)."""
        if self._thread is not None:
            return
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="chatd-store", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> bool:
        """Commit everything queued (waiting up to ``timeout``), then stop the writer.

        True if everything queued was committed.  Called on shutdown: a SIGTERM
        loses nothing that was written before it.
        """
        flushed = self.flush(timeout)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._hand_over(_STOP, urgent=True)
            thread.join(timeout=max(1.0, timeout))
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None
        return flushed

    @property
    def done(self) -> int:
        """Writes the writer has finished with (committed or rejected), in order: write
        number N (see :meth:`write`) is on disk, or never will be, once ``done >= N``."""
        return self.committed + self.rejected

    @property
    def queued(self) -> int:
        """Statements waiting for the writer."""
        return len(self._pending)

    # -- the loop's side ---------------------------------------------------------------

    def write(self, sql: str | Callable[[sqlite3.Connection], None],
              params: Sequence[Any] = ()) -> int:
        """Queue one statement (or a function of the writer's connection); never blocks.

        Returns the write's number, 1, 2, 3...: it is done (committed, or rejected
        as a bad statement) once :attr:`done` reaches it, so a plugin can keep
        in memory what is not on disk yet.  Returns 0 (false) if the queue is
        full (the disk has been failing for a while): the write is dropped and
        counted.
        """
        return self._enqueue(sql if callable(sql) else (sql, params))

    def insert(self, table: str, columns: tuple[str, ...], values: Sequence[Any]) -> int:
        """Queue one row for ``table``: what :meth:`write` does for an ``INSERT``, but
        rows queued together go in as multi-row statements, many times cheaper for
        the writer (history inserts a row per line said).  Returns the write's
        number, or 0 if dropped, like :meth:`write`.
        """
        prefix = self._inserts.get((table, columns))
        if prefix is None:
            names = (table, *columns)
            if not all(isinstance(n, str) and _IDENTIFIER.match(n) for n in names):
                raise ValueError(f"not plain SQL names: {names!r}")
            prefix = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
            self._inserts[(table, columns)] = prefix
        if len(values) != len(columns):
            raise ValueError(f"{len(columns)} columns, {len(values)} values")
        return self._enqueue((_ROW, prefix, values))

    def _enqueue(self, item: Any) -> int:
        """Hand a write to the writer, or drop and count it if too many wait."""
        if len(self._pending) >= self.queue_max:
            self.dropped += 1
            return 0
        self._pending.append(item)
        if not self._wake.is_set():
            self._wake.set()
        self.accepted += 1
        return self.accepted

    def _hand_over(self, item: Any, *, urgent: bool = False) -> None:
        self._pending.append(item)
        if urgent:
            self._urgent.set()
        self._wake.set()

    def migrate(self, owner: str, steps: Sequence[str], timeout: float = 10.0, *,
                guard: TableGuard | None = None) -> None:
        """Bring ``owner``'s tables up to date: run the ``steps`` not yet applied.

        Each step is SQL (one or more statements) applied in its own transaction,
        in order, and recorded; a step is never changed once shipped, only new
        ones appended.  Called from ``chatd_startup``; waits for the writer (up to
        ``timeout``).  Raises RuntimeError if a step fails or the database holds
        a newer version than ``steps`` describes; if the database cannot be
        reached, the steps wait in the queue and run as soon as it can.
        ``guard`` (a :class:`TableGuard`): the steps may touch only the tables it
        allows (a plugin's own).
        """
        migration = _Migration(owner, steps, guard)
        self._hand_over(migration, urgent=True)
        if migration.done.wait(timeout) and migration.error:
            raise RuntimeError(f"store: {owner}: {migration.error}")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (True) or ``timeout`` passes."""
        if self._thread is None:
            return not self._pending
        barrier = _Barrier()
        self._hand_over(barrier, urgent=True)
        return barrier.done.wait(timeout) and barrier.ok

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query on the loop, cut after ``read_timeout``; raises StoreUnavailable.

        Keep queries bounded (``LIMIT``) and indexed: the timeout is a guard, not a plan.
        """
        reader = self._reader
        try:
            if reader is None:
                reader = self._reader = self._connect(reader=True)
            self._deadline = time.monotonic() + self.read_timeout
            return reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and "interrupted" in str(exc):
                limit = f"{self.read_timeout * 1000:g} ms"
                raise StoreUnavailable(f"a read took over {limit}") from None
            if reader is not None and not isinstance(exc, sqlite3.OperationalError):
                with contextlib.suppress(sqlite3.Error):
                    reader.close()
                self._reader = None
            raise StoreUnavailable(str(exc)) from None

    # -- connections -------------------------------------------------------------------

    def _connect(self, *, reader: bool = False) -> sqlite3.Connection:
        # Autocommit mode: transactions are the explicit BEGIN/COMMIT below.  The
        # reader never waits for a lock (timeout 0); the writer waits for another
        # process (an operator's sqlite3 shell) a few seconds.
        conn = sqlite3.connect(self._uri, uri=True, timeout=0 if reader else 5.0,
                               isolation_level=None)
        try:
            if reader:
                conn.set_progress_handler(self._over_time, 1000)
                if self.path is None:
                    conn.execute("PRAGMA read_uncommitted = 1")  # shared cache: no table locks
            else:
                if self.path is not None:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        log.warning("store: %s is not in WAL mode (%s)", self.path, mode)
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS chatd_schema "
                    "(owner TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
            # A file that is not a database (or is corrupt) fails here, not later.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    def _over_time(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        pause = RETRY_FIRST_SECONDS
        batch: list[Any] = []
        stopping = False
        while True:
            if not batch:
                self._wake.clear()
                if not self._pending:
                    self._wake.wait()
                    continue
                # Let a batch gather (unless one is there already, or someone waits
                # for the commit), then take it.  Behind, the writer never sleeps.
                if len(self._pending) < self.batch_max and self._urgent.wait(
                    self.batch_seconds
                ):
                    self._urgent.clear()
                stopping = self._take(batch)
                if not batch:
                    if stopping:
                        break
                    continue
            if conn is None:
                try:
                    conn = self._connect()
                except sqlite3.Error as exc:
                    self._trouble(f"cannot open {self.path}: {exc}")
                    if stopping:
                        break
                    pause = _back_off(pause)
                    continue
            try:
                try:
                    self._commit(conn, batch)
                except sqlite3.Error as exc:
                    if _is_disk_trouble(exc) or not isinstance(
                        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError
                        | sqlite3.OperationalError
                    ):
                        raise
                    # One bad statement (a plugin's bug) must not hold back the
                    # others forever: apply them one by one, dropping what fails.
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    self._commit_each(conn, batch)
            except sqlite3.Error as exc:
                self.failures += 1
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                    exc, sqlite3.OperationalError
                ):
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                    conn = None  # corrupt or replaced: open it again
                self._trouble(f"writing {self.path or 'the database'}: {exc}")
                if stopping:
                    break
                pause = _back_off(pause)
                continue
            batch = []
            pause = RETRY_FIRST_SECONDS
            if self.problem:
                self._resolved()
            if stopping:
                break
        for item in batch:  # what could not be written by the end
            if isinstance(item, _Barrier | _Migration):
                item.done.set()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _take(self, batch: list[Any]) -> bool:
        """Move up to ``batch_max`` writes from the hand-off into ``batch`` (barriers
        and migrations come along without counting); True if a stop request came."""
        pending = self._pending
        writes = 0
        while pending and writes < self.batch_max:
            item = pending.popleft()
            if item is _STOP:
                return True
            batch.append(item)
            if not isinstance(item, _Barrier | _Migration):
                writes += 1
        return False

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        """Apply ``batch`` in one transaction (migrations in their own), then report."""
        conn.execute("BEGIN IMMEDIATE")
        written = 0
        count = len(batch)
        i = 0
        while i < count:
            item = batch[i]
            i += 1
            if item.__class__ is tuple and item[0] is _ROW:
                prefix = item[1]
                rows = [item[2]]
                most = min(ROWS_PER_INSERT, _MAX_VALUES // max(1, len(item[2])))
                while (i < count and len(rows) < most
                       and batch[i].__class__ is tuple and batch[i][1] is prefix):
                    rows.append(batch[i][2])
                    i += 1
                conn.execute(_multirow(prefix, len(rows[0]), len(rows)),
                             [value for row in rows for value in row])
                written += len(rows)
            elif item.__class__ is tuple:
                # A run of the same statement goes in one executemany (a C loop).
                sql = item[0]
                run = [item[1]]
                while (i < count and batch[i].__class__ is tuple and len(batch[i]) == 2
                       and batch[i][0] == sql):
                    run.append(batch[i][1])
                    i += 1
                if len(run) == 1:
                    conn.execute(sql, run[0])
                else:
                    conn.executemany(sql, run)
                written += len(run)
            elif isinstance(item, _Migration):
                conn.execute("COMMIT")
                item.error = self._migrate(conn, item)
                conn.execute("BEGIN IMMEDIATE")
            elif callable(item):
                item(conn)
                written += 1
        conn.execute("COMMIT")
        self.committed += written
        for item in batch:
            if isinstance(item, _Barrier):
                item.ok = True
            if isinstance(item, _Barrier | _Migration):
                item.done.set()

    def _commit_each(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        """The batch item by item, each in its own transaction; a failing write is
        logged and dropped (``rejected``), a disk problem raised as usual."""
        while batch:  # what is done leaves the batch, so a retry repeats nothing
            item = batch[0]
            try:
                self._commit(conn, [item])
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if _is_disk_trouble(exc):
                    raise
                self.rejected += 1
                if isinstance(item, tuple):
                    statement = item[1] if item[0] is _ROW else item[0]
                else:
                    statement = getattr(item, "__qualname__", repr(item))
                log.error("store: a write failed and was dropped: %s (%s)", exc, statement)
            del batch[0]

    def _migrate(self, conn: sqlite3.Connection, migration: _Migration) -> str | None:
        row = conn.execute(
            "SELECT version FROM chatd_schema WHERE owner = ?", (migration.owner,)
        ).fetchone()
        version = row[0] if row else 0
        if version > len(migration.steps):
            return (f"the database is at version {version}, newer than the "
                    f"{len(migration.steps)} this chatd knows: was it written by a newer one?")
        for number, step in enumerate(migration.steps[version:], start=version + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                with _guarded(conn, migration.guard):
                    for statement in _statements(step):
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO chatd_schema (owner, version) VALUES (?, ?) "
                    "ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
                    (migration.owner, number),
                )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and _is_disk_trouble(exc):
                    raise  # not the step's fault: retried with the batch
                refused = migration.guard.refused if migration.guard is not None else None
                return f"migration step {number} failed: {refused or exc}"
            log.log(logging.INFO if self.path is not None else logging.DEBUG,
                    "store: %s schema now at version %d", migration.owner, number)
        return None

    # -- reporting ---------------------------------------------------------------------

    def _trouble(self, problem: str) -> None:
        if problem == self.problem:
            return
        first = not self.problem
        self.problem = problem
        if first:
            self._report(problem)

    def _resolved(self) -> None:
        self.problem = ""
        self._report(None)

    def _report(self, problem: str | None) -> None:
        callback = self.on_problem
        if callback is None:
            return
        if self._post is not None:
            self._post(lambda: callback(problem))
        else:
            callback(problem)


def _back_off(pause: float) -> float:
    """Wait ``pause`` before retrying a failing disk; the next pause is twice as long."""
    time.sleep(pause)
    return min(pause * 2, RETRY_MAX_SECONDS)


@functools.lru_cache(maxsize=64)
def _multirow(prefix: str, columns: int, rows: int) -> str:
    """``INSERT INTO t (a, b) VALUES (?, ?), (?, ?)...`` for ``rows`` rows."""
    one = "(" + ", ".join("?" * columns) + ")"
    return prefix + ", ".join([one] * rows)


def _statements(script: str) -> list[str]:
    """Split a migration step into statements (``;`` at the end of complete ones)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


# -- whose tables: a plugin's SQL touches only its own -------------------------------------

#: What SQLite asks an authorizer about, and which name (argument) each action is on.
#: Index, trigger: their own name and their table's.  Absent: always allowed (reads,
#: functions) or always refused (see ``_REFUSED``).
_NAMED_ACTIONS: dict[int, tuple[int, ...]] = {
    sqlite3.SQLITE_CREATE_TABLE: (0,), sqlite3.SQLITE_CREATE_VIEW: (0,),
    sqlite3.SQLITE_CREATE_INDEX: (0, 1), sqlite3.SQLITE_CREATE_TRIGGER: (0, 1),
    sqlite3.SQLITE_DROP_TABLE: (0,), sqlite3.SQLITE_DROP_VIEW: (0,),
    sqlite3.SQLITE_DROP_INDEX: (0, 1), sqlite3.SQLITE_DROP_TRIGGER: (0, 1),
    sqlite3.SQLITE_ALTER_TABLE: (1,), sqlite3.SQLITE_REINDEX: (0,),
    sqlite3.SQLITE_INSERT: (0,), sqlite3.SQLITE_UPDATE: (0,), sqlite3.SQLITE_DELETE: (0,),
}
#: Never from a plugin: temporary objects, pragmas, attached files, virtual tables, and
#: transaction control (the store's writer owns the transaction).
_REFUSED = frozenset({
    sqlite3.SQLITE_CREATE_TEMP_INDEX, sqlite3.SQLITE_CREATE_TEMP_TABLE,
    sqlite3.SQLITE_CREATE_TEMP_TRIGGER, sqlite3.SQLITE_CREATE_TEMP_VIEW,
    sqlite3.SQLITE_DROP_TEMP_INDEX, sqlite3.SQLITE_DROP_TEMP_TABLE,
    sqlite3.SQLITE_DROP_TEMP_TRIGGER, sqlite3.SQLITE_DROP_TEMP_VIEW,
    sqlite3.SQLITE_PRAGMA, sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH,
    sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT,
    sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE,
})
#: SQLite's own bookkeeping, which it writes itself when a plugin creates its tables.
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_sequence"})


class TableGuard:
    """A SQLite authorizer for one plugin's SQL: it may create, change, write and drop
    only the tables (and indexes, views, triggers) named after it: ``owner`` or
    ``owner_*``.  Reads are free.  So a plugin's ``CREATE TABLE IF NOT EXISTS history``
    can never adopt the built-in history's table, and its writes cannot reach the
    accounts.  ``refused`` says what was refused last, for the error message.
    """

    __slots__ = ("owner", "prefix", "refused")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.prefix = re.sub(r"\W", "_", owner.lower())
        self.refused: str | None = None

    def owns(self, name: str) -> bool:
        name = name.lower()
        return name == self.prefix or name.startswith(self.prefix + "_")

    def __call__(self, action: int, arg1: str | None, arg2: str | None,
                 database: str | None, source: str | None) -> int:
        if action in _REFUSED:
            self.refused = (f"plugin {self.owner!r} may not use SQL that changes the "
                            f"connection (action {action}: {arg1 or arg2 or ''})")
            return sqlite3.SQLITE_DENY
        for index in _NAMED_ACTIONS.get(action, ()):
            name = (arg1, arg2)[index]
            if name is None or name.lower() in _SCHEMA_TABLES or self.owns(name):
                continue
            self.refused = (f"plugin {self.owner!r} may not touch {name!r}: a plugin's "
                            f"tables are named {self.prefix} or {self.prefix}_*, and it "
                            f"changes no others")
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK


@contextlib.contextmanager
def _guarded(conn: sqlite3.Connection, guard: TableGuard | None) -> Any:
    """Run the block with ``guard`` as the connection's authorizer (none: unguarded)."""
    if guard is None:
        yield
        return
    conn.set_authorizer(guard)
    try:
        yield
    finally:
        conn.set_authorizer(None)


def is_disk_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk's or the database file's fault (full, read-only,
    locked), not the statement's: the store retries those."""
    return isinstance(exc, sqlite3.Error) and _is_disk_trouble(exc)


def _is_disk_trouble(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("disk", "full", "readonly", "read-only", "locked",
                                         "unable to open", "i/o"))
