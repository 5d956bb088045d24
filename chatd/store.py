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
* **A bad write costs only itself, and the writer never dies.**  A statement
  SQLite refuses, a value it cannot store (a lone surrogate, an integer past
  64 bits) or a write function that raises (anything, ``SystemExit`` too) is
  dropped, counted (``rejected``, and by owner: the plugin that queued it) and
  logged with that owner; the rest of its batch is committed.  An exception
  that escapes the writer's own loop (a bug here) is logged and the loop starts
  over with the batch it held; and if the thread dies all the same (an
  exception forced into it from outside), :meth:`Store.watch`, called on the
  loop every second by the server, starts a new one, which carries on with that
  batch: an accepted write is committed, rejected as bad, or dropped and
  counted, never lost silently.

The file is the server's alone: the folders the store creates are 0700 and the
database 0600 (SQLite gives its ``-wal`` and ``-shm`` files the database's
mode), whatever the umask.  A folder or file it finds open to others is
warned about at start, loudly, not changed: it may be an operator's choice.

Reads happen on the loop, on a connection of their own (WAL: readers never
wait for the writer), and are cut after ``read_timeout`` by SQLite's progress
handler, so a read costs the loop at most that.  A read that fails or is cut
raises :class:`StoreUnavailable`; the caller says so to whoever asked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import store_sqlite
from .store_reads import Reader, StoreAnswer, log_read_failure
from .store_sqlite import SqliteDialect

log = logging.getLogger("chatd.store")

__all__ = ["Store", "StoreAnswer", "StoreUnavailable", "TableGuard", "is_store_trouble"]

#: How often a migration's wait looks whether the writer has given up on the database.
MIGRATE_POLL_SECONDS = 0.05
#: How long a read may wait during a plugin's ``chatd_startup`` (see :meth:`Store.patient`):
#: nobody is served yet, and a first PostgreSQL read also opens its connection.
PATIENT_READ_SECONDS = 5.0
#: Pause before retrying a failed commit or open; doubles up to the maximum.
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 5.0
#: Rejected writes are logged once per owner and kind of error in this long (the
#: rest counted, and the count logged with the next one): a plugin that queues a
#: bad write per chat line must not flood the log.
REJECT_LOG_SECONDS = 60.0
#: Modes of what the store creates: the database holds every stored line.
FOLDER_MODE = store_sqlite.FOLDER_MODE
FILE_MODE = store_sqlite.FILE_MODE


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

    def __init__(self, owner: str, steps: Sequence[Step], guard: TableGuard | None = None) -> None:
        self.owner = owner
        self.steps = tuple(steps)
        self.guard = guard
        self.done = threading.Event()
        self.error: str | None = None


_STOP = object()
#: ``(_ROWS, statement prefix, [values, ...], owner)``: the rows one tick inserted into
#: one table, handed to the writer together (:meth:`Store.insert` with ``defer``).
_ROWS = object()
#: The writes on the queue are tuples whose last element is their owner (the
#: plugin that queued it, or None): ``(sql, params, owner)`` for a statement,
#: ``(_ROW, statement prefix, values, owner)`` for a row, ``(_CALL, function,
#: owner)`` for a function of the connection.
_ROW = object()
_CALL = object()
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_NOTIFY = object()
#: A change notice's payload, at most (PostgreSQL's own limit is 8000 bytes, with
#: the sender's origin in front).
NOTIFY_PAYLOAD_MAX = 7000
#: A migration step: SQL for every backend, a function of the writer's connection, or
#: a mapping from the backend's :attr:`Store.dialect` to either (where they differ).
Step = str | Callable[[Any], None] | dict[str, Any]

#: What :meth:`Store.write` takes: a statement and its parameters, or a function
#: run on the writer's connection inside the batch's transaction.
WriteItem = tuple[str, Sequence[Any]] | Callable[[sqlite3.Connection], None]


def _nobody() -> str | None:
    """The owner of every write when nobody said how to tell (a store on its own)."""
    return None


class Store:
    """A SQLite database with a batching writer thread; see the module docstring.

    ``path`` None keeps the database in memory (gone with the process: tests, or
    a server configured to remember nothing).  ``post`` hands a callable to the
    loop from another thread (``reactor.call_soon_threadsafe``); problem reports
    go through it, so ``on_problem`` always runs on the loop.  ``owner`` names
    who is writing (called on the loop at each write; the server's answers the
    plugin whose code is running), so a bad write is logged with its owner.
    """

    __slots__ = (
        "_batch", "_call_later", "_db", "_deadline", "_defer", "_dropping", "_in_doubt",
        "_inserts", "_listeners", "_logged", "_open_due", "_open_owner", "_open_prefix",
        "_open_rows", "_patient", "_pending", "_post", "_reader", "_reads", "_thread",
        "_urgent", "_wake", "accepted", "batch_max", "batch_seconds", "committed",
        "dialect", "dropped", "failures", "migrations", "on_problem", "origin", "owner",
        "path", "problem", "queue_max", "read_timeout", "rejected", "rejected_by",
        "restarts", "synchronous",
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
        owner: Callable[[], str | None] | None = None,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
        url: str | None = None,
        defer: Callable[[Callable[[], None]], Any] | None = None,
    ) -> None:
        self.path = path
        if url is not None:
            if path is not None:
                raise ValueError("a store is on a file (path) or a server (url), not both")
            from . import store_postgres  # psycopg: only when a URL is configured

            if store_postgres.is_trouble not in TROUBLE_CHECKS:
                TROUBLE_CHECKS.append(store_postgres.is_trouble)
            self._db: Any = store_postgres.PostgresDialect(url)
        else:
            self._db = SqliteDialect(path, synchronous)
        #: Which SQL the database speaks: "sqlite" or "postgresql".  Migration steps
        #: may differ by it (a mapping per step); statements use ``?`` placeholders
        #: on both.
        self.dialect: str = self._db.name
        #: This store's name in change notices (:meth:`notify`): a process ignores
        #: its own.
        self.origin = os.urandom(6).hex()
        self._call_later = call_later
        self._reads: Reader | None = None
        #: Channel -> callbacks of :meth:`listen`.
        self._listeners: dict[str, list[Callable[[str | None], None]]] = {}
        #: Owner -> (its migration steps, its guard), as :meth:`migrate` was last given
        #: them: what ``chatd --copy-store-to`` replays on another database.
        self.migrations: dict[str, tuple[tuple[Step, ...], TableGuard | None]] = {}
        self.batch_seconds = batch_seconds
        self.batch_max = batch_max
        self.read_timeout = read_timeout
        #: Inside :meth:`patient` (plugins starting): reads on PostgreSQL may wait longer.
        self._patient = 0
        self.synchronous = synchronous
        self._post = post
        #: Called on the loop with the problem's description, then with None once
        #: writing works again.
        self.on_problem = on_problem
        #: Who is writing now (a plugin's name, or None): asked at each write.
        self.owner = owner or _nobody
        self.queue_max = queue_max
        # The hand-off: a deque (appends and pops are atomic) and an event that wakes
        # the writer when it sleeps with nothing to do; a queue.Queue's lock and
        # condition per write would cost the loop more than the write itself.
        self._pending: deque[Any] = deque()
        self._wake = threading.Event()
        #: Set when someone waits for the commit (flush, migrate, close): the writer
        #: stops gathering and commits at once.
        self._urgent = threading.Event()
        #: What the writer has taken and not finished: kept here, not in the thread,
        #: so a writer started after one died carries on with it.
        self._batch: list[Any] = []
        self._inserts: dict[int, tuple[Any, str, str]] = {}
        #: ``defer(callback)`` runs ``callback`` on the loop later in this tick (the
        #: reactor's ``call_soon``): the rows :meth:`insert` gets in one tick go to the
        #: writer as one run (one hand-off, one item for the writer to take).  None:
        #: each row is handed over at once.
        self._defer = defer
        #: The run being gathered (the loop's alone until handed over), its statement
        #: prefix and owner, and whether its hand-off is scheduled.
        self._open_rows: list[Sequence[Any]] | None = None
        self._open_prefix = ""
        self._open_owner: str | None = None
        self._open_due = False
        #: Set when the queue overflowed (logged once), cleared when writing works again.
        self._dropping = False
        #: (batch id, writes' end, writes) of a COMMIT whose outcome is unknown.
        self._in_doubt: tuple[str, int, int] | None = None
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._deadline = 0.0
        #: (owner, error type) -> (when last logged, how many since): the log's throttle.
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}
        #: The current problem ("" when there is none); written by the writer thread.
        self.problem = ""
        #: Statements committed, dropped (queue full), rejected (a bad write: logged
        #: and dropped), and failed commit attempts (retried).
        self.committed = 0
        self.dropped = 0
        self.rejected = 0
        self.failures = 0
        #: Rejected writes by owner (the plugin that queued them; "?" for unknown).
        self.rejected_by: dict[str, int] = {}
        #: Times the writer started over: after an error escaped its loop, or after
        #: its thread died and :meth:`watch` started a new one.
        self.restarts = 0
        #: Writes accepted so far (the number of the last one; see :attr:`done`).
        self.accepted = 0

    # -- life --------------------------------------------------------------------------

    def open(self) -> None:
        """Start the writer thread (it opens the database, and retries until it can).

        A file database gets its folders (0700) and an empty file (0600) first,
        here, so that SQLite, which gives the ``-wal`` and ``-shm`` files the
        database's mode, never makes one that others can read.
        """
        if self._thread is not None:
            return
        self._db.prepare()
        self._start_writer()

    @property
    def location(self) -> str:
        """The database as logs name it: the file, or the URL without its password."""
        return self._db.where

    def _start_writer(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chatd-store", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the writer thread runs (between :meth:`open` and :meth:`close`)."""
        return self._thread is not None and self._thread.is_alive()

    def watch(self) -> bool:
        """The watchdog: start a new writer if the thread has died (True if it had).

        Called on the loop (the server does every second; :meth:`flush`,
        :meth:`migrate` and :meth:`close` do first).  The new writer carries on
        with the batch the dead one held, so nothing accepted is lost.
        """
        thread = self._thread
        if thread is None or thread.is_alive():
            return False
        self.restarts += 1
        log.error("store: the writer thread had stopped; started a new one "
                  "(restarts so far: %d)", self.restarts)
        self._start_writer()
        return True

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
        if self._reads is not None:
            self._reads.close()
            self._reads = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._db.shutdown()
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

    def write(self, sql: str | Callable[[Any], None],
              params: Sequence[Any] = ()) -> int:
        """Queue one statement (or a function of the writer's connection); never blocks.

        Returns the write's number, 1, 2, 3...: it is done (committed, or rejected
        as a bad write) once :attr:`done` reaches it, so a plugin can keep in
        memory what is not on disk yet.  Returns 0 (false) if the queue is full
        (the disk has been failing for a while): the write is dropped and
        counted.
        """
        owner = self.owner()
        return self._enqueue((_CALL, sql, owner) if callable(sql) else (sql, params, owner))

    def insert(self, table: str, columns: tuple[str, ...], values: Sequence[Any]) -> int:
        """Queue one row for ``table``: what :meth:`write` does for an ``INSERT``, but
        rows queued together go in as multi-row statements, many times cheaper for
        the writer (history inserts a row per line said).  Returns the write's
        number, or 0 if dropped, like :meth:`write`.
        """
        # Per line said: the statement's prefix is found by the columns tuple's identity
        # (callers pass one constant), its table checked by identity too, before any
        # hashing of a dozen names.
        known = self._inserts.get(id(columns))
        if known is None or known[0] is not columns or known[1] is not table:
            known = self._insert_prefix(table, columns)
        if len(values) != len(columns):
            raise ValueError(f"{len(columns)} columns, {len(values)} values")
        if self._defer is None:
            return self._enqueue((_ROW, known[2], values, self.owner()))
        # Waiting writes, rows of runs included (the queue holds a run as one item).
        waiting = self.accepted - self.committed - self.rejected
        if waiting >= self.queue_max:
            return self._dropped(waiting)
        owner = self.owner()
        run = self._open_rows
        if run is None or self._open_prefix is not known[2] or self._open_owner != owner:
            if run is not None:
                self._hand_over_rows()
            run = self._open_rows = []
            self._open_prefix = known[2]
            self._open_owner = owner
            if not self._open_due:
                self._open_due = True
                self._defer(self._open_rows_due)
        run.append(values)
        self.accepted += 1
        return self.accepted

    def _open_rows_due(self) -> None:
        self._open_due = False
        if self._open_rows is not None:
            self._hand_over_rows()

    def _hand_over_rows(self) -> None:
        """Give the writer the rows gathered (before anything queued after them)."""
        run, self._open_rows = self._open_rows, None
        if run:
            self._pending.append((_ROWS, self._open_prefix, run, self._open_owner))
            if not self._wake.is_set():
                self._wake.set()

    def _insert_prefix(self, table: str, columns: tuple[str, ...]) -> tuple[Any, str, str]:
        """``(columns, table, "INSERT INTO table (columns) VALUES ")`` for :meth:`insert`,
        the names checked; kept by the columns tuple's id (with the tuple itself, so the
        id stays its own)."""
        names = (table, *columns)
        if not all(isinstance(n, str) and _IDENTIFIER.match(n) for n in names):
            raise ValueError(f"not plain SQL names: {names!r}")
        known = (columns, table, f"INSERT INTO {table} ({', '.join(columns)}) VALUES ")
        if len(self._inserts) < 1024:  # callers building tuples on the fly: not kept
            self._inserts[id(columns)] = known
        return known

    def _enqueue(self, item: Any) -> int:
        """Hand a write to the writer, or drop and count it if too many wait."""
        if self._open_rows is not None:
            self._hand_over_rows()  # the rows gathered were queued before this write
        if len(self._pending) >= self.queue_max:
            return self._dropped(len(self._pending))
        self._pending.append(item)
        if not self._wake.is_set():
            self._wake.set()
        self.accepted += 1
        return self.accepted

    def _dropped(self, waiting: int) -> int:
        """A write not taken (``waiting`` wait already): counted, logged once an outage."""
        self.dropped += 1
        if not self._dropping:  # once per outage: the count goes on in metrics
            self._dropping = True
            log.error("store: %d writes wait for %s (storage.queue_max): new writes "
                      "are dropped and counted until it is back", waiting, self.location)
        return 0

    def _hand_over(self, item: Any, *, urgent: bool = False) -> None:
        if self._open_rows is not None:
            self._hand_over_rows()
        self._pending.append(item)
        if urgent:
            self._urgent.set()
        self._wake.set()

    def migrate(self, owner: str, steps: Sequence[Step], timeout: float = 10.0, *,
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

        Tables already at ``len(steps)`` (every start but the first, every reload)
        return at once, from a read: a writer stuck on a full disk must not hold
        the loop for ``timeout`` per plugin when there is nothing to do.
        """
        self.migrations[owner] = (tuple(steps), guard)
        self.watch()
        if self._version(owner) == len(steps):
            return
        migration = _Migration(owner, steps, guard)
        self._hand_over(migration, urgent=True)
        # Wait for the writer, but not for a database it cannot reach: the steps stay
        # queued, ahead of every write made after them, and run when it is back; the
        # server starts meanwhile (chat works, the plugin's reads answer unavailable).
        deadline = time.monotonic() + timeout
        while not migration.done.wait(MIGRATE_POLL_SECONDS):
            if self.problem or time.monotonic() >= deadline:
                log.warning("store: %s: the database cannot be written now (%s); its "
                            "migration waits in the queue and runs when it can", owner,
                            self.problem or "the writer is busy")
                return
        if migration.error:
            raise RuntimeError(f"store: {owner}: {migration.error}")

    def _version(self, owner: str) -> int | None:
        """The version of ``owner``'s tables in the database now; None if it cannot be
        read (no database yet, no ``chatd_schema`` yet: the writer makes both)."""
        try:
            rows = self._read("SELECT version FROM chatd_schema WHERE owner = ?", (owner,),
                              quiet=True)  # fails before the writer made the table
        except StoreUnavailable:
            return None
        return int(rows[0][0]) if rows else 0

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (True) or ``timeout`` passes."""
        if self._thread is None:
            return not self._pending and self._open_rows is None
        if not self._pending and self.done >= self.accepted:
            return True  # nothing accepted waits: no need to wait for a busy writer's turn
        self.watch()
        barrier = _Barrier()
        self._hand_over(barrier, urgent=True)
        return barrier.done.wait(timeout) and barrier.ok

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query on the loop, cut after ``read_timeout``; raises StoreUnavailable.

        Keep queries bounded (``LIMIT``) and indexed: the timeout is a guard, not a plan.
        On PostgreSQL the query goes to the reader thread (:meth:`ask`'s), and the
        loop waits for it at most ``read_timeout``, as SQLite's progress handler
        cuts a read on the loop.
        """
        return self._read(sql, params)

    def _read(self, sql: str, params: Sequence[Any], *,
              quiet: bool = False) -> list[tuple[Any, ...]]:
        """:meth:`read`; ``quiet``: a failure is expected, not logged."""
        if self._db.name != "sqlite":
            return self._read_waiting(sql, params, quiet=quiet)
        reader = self._reader
        try:
            if reader is None:
                reader = self._reader = self._db.connect(reader=True, over_time=self._over_time)
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
            reason = "the database could not answer the read"
            if not quiet:
                log_read_failure(reason, exc, sql)
            raise StoreUnavailable(reason) from None

    @contextlib.contextmanager
    def patient(self) -> Any:
        """While plugins start (``chatd_startup``, at start and on reload), a read on
        PostgreSQL may wait up to ``PATIENT_READ_SECONDS`` instead of
        ``read_timeout``: it loads what the plugin needs before anyone is served by
        it, and the first one opens the reader's connection.  A database that is
        not there still answers at once (refused) or within the connect timeout."""
        self._patient += 1
        try:
            yield self
        finally:
            self._patient -= 1

    def _read_waiting(self, sql: str, params: Sequence[Any], *,
                      quiet: bool = False) -> list[tuple[Any, ...]]:
        """A read on the reader thread, waited for at most ``read_timeout``."""
        wait = PATIENT_READ_SECONDS if self._patient else self.read_timeout
        answer = self._reader_thread().wait(sql, params, wait, quiet=quiet)
        if answer.error is not None:
            raise StoreUnavailable(answer.error)
        return answer.rows

    def _reader_thread(self) -> Reader:
        reads = self._reads
        if reads is None:
            db = self._db
            reads = self._reads = Reader(
                lambda: db.connect(reader=True), db.run_read, db.close,
                post=self._post, call_later=self._call_later,
                describe_error=db.describe_read_error)
        return reads

    def ask(self, sql: str, params: Sequence[Any], then: Callable[[StoreAnswer], None],
            *, timeout: float = 2.0) -> None:
        """Run a query off the loop; ``then(answer)`` gets the rows on the loop.

        The form every read should use: the loop never waits for the database
        (a slow disk, a PostgreSQL server far away or frozen).  ``answer`` is a
        :class:`StoreAnswer`: ``answer.rows``, or ``answer.error`` saying why not
        (the database refused, could not be reached, or did not answer within
        ``timeout`` seconds: then the asker is told and the late rows are thrown
        away).  ``then`` is called exactly once.  Keep queries bounded and
        indexed.  A store with no loop (on its own, in a test) answers at once,
        before ``ask`` returns.
        """
        self._reader_thread().ask(sql, params, then, timeout)

    def notify(self, channel: str, payload: str = "") -> int:
        """Tell every other process sharing the database that something changed.

        Queued like a write, after the writes before it, and sent when they are
        committed (on PostgreSQL, ``NOTIFY`` in the same transaction); every other
        process's :meth:`listen` callbacks for ``channel`` get ``payload`` on
        their loop.  SQLite is one process's: nobody else to tell, so nothing is
        sent.  Returns the write's number (0 if dropped), like :meth:`write`.
        """
        if not _IDENTIFIER.match(channel):
            raise ValueError(f"not a plain channel name: {channel!r}")
        if len(payload.encode("utf-8", "surrogatepass")) > NOTIFY_PAYLOAD_MAX:
            raise ValueError(f"a change notice's payload is at most {NOTIFY_PAYLOAD_MAX} bytes")
        return self._enqueue((_NOTIFY, channel, payload, self.owner()))

    def listen(self, channel: str, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(payload)`` on the loop for every other process's
        :meth:`notify` on ``channel``; ``callback(None)`` after the connection that
        listens was lost and is back (or could not be made at first and now is):
        changes may have been missed, reload everything.  It comes once listening
        is back, so nothing after the reload is missed.  Never called with SQLite
        (one process)."""
        if not _IDENTIFIER.match(channel):
            raise ValueError(f"not a plain channel name: {channel!r}")
        self._listeners.setdefault(channel, []).append(callback)
        if self.dialect != "sqlite":
            self._db.listen(self._listeners, self.origin, self._post)

    def _over_time(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        """The writer thread: :meth:`_write` until stopped.

        A bad write never gets here (whatever it raised, it is dropped where it
        failed).  An ``Exception`` that does is a bug in this module: logged with
        its traceback, and the loop starts over (after a growing pause, so a bug
        that recurs cannot spin) with the batch it held.  Anything else (an
        exception forced into the thread from outside) ends the thread, logged;
        :meth:`watch` starts a new one.
        """
        try:
            pause = RETRY_FIRST_SECONDS
            while True:
                try:
                    self._write()
                    return
                except Exception:
                    if self._thread is None:  # closing: what it held stays unwritten
                        log.exception("store: the writer failed while closing")
                        return
                    self.restarts += 1
                    log.exception("store: the writer failed (a bug); it starts over in %g s "
                                  "with the %d write(s) it held", pause, len(self._batch))
                    pause = _back_off(pause)
        except BaseException as exc:  # the thread's last word; the watchdog takes over
            log.error("store: the writer thread stopped (%s); the watchdog starts a new one",
                      type(exc).__name__, exc_info=True)

    def _write(self) -> None:
        """Commit what is queued, batch by batch, until a stop request (see _run)."""
        db = self._db
        conn: Any = None
        pause = RETRY_FIRST_SECONDS
        batch = self._batch
        stopping = False
        try:
            while True:
                if not batch:
                    self._wake.clear()
                    if not self._pending:
                        self._wake.wait()
                        continue
                    # Let a batch gather (unless one is there already, or someone
                    # waits for the commit), then take it.  Behind, the writer never
                    # sleeps.
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
                        conn = db.connect()
                    except db.errors as exc:
                        self._trouble(f"cannot open {db.where}: {db.describe_error(exc)}")
                        if stopping:
                            break
                        pause = _back_off(pause)
                        continue
                try:
                    self._commit_batch(conn, batch)
                except db.errors as exc:
                    self.failures += 1
                    db.rollback(conn)
                    if db.reopen_after(conn, exc):
                        db.close(conn)
                        conn = None  # corrupt, replaced or cut: open it again
                    self._trouble(f"writing {db.where}: {db.describe_error(exc)}")
                    if stopping:
                        break
                    pause = _back_off(pause)
                    continue
                pause = RETRY_FIRST_SECONDS
                if self.problem:
                    self._resolved()
                if stopping:
                    break
            for item in batch:  # what could not be written by the end
                if isinstance(item, _Barrier | _Migration):
                    item.done.set()
        finally:
            if conn is not None:
                db.close(conn)

    def _take(self, batch: list[Any]) -> bool:
        """Move up to ``batch_max`` writes from the hand-off into ``batch`` (barriers
        and migrations come along without counting); True if a stop request came."""
        pending = self._pending
        append = batch.append
        popleft = pending.popleft
        writes = 0
        limit = self.batch_max
        while pending and writes < limit:  # per write queued: kept to a few operations
            item = popleft()
            if item.__class__ is tuple:
                append(item)
                writes += 1
            elif item is _STOP:
                return True
            else:  # a barrier or a migration: comes along, not counted
                append(item)
        return False

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        """Commit ``batch``; if a write in it is bad, commit it write by write, dropping
        the bad ones.  A problem of the database itself (the disk, a corrupt
        file) is raised: the batch is retried."""
        if self._in_doubt is not None:
            self._settle_doubt(conn, batch)
        try:
            self._commit(conn, batch)
            return
        except BaseException as exc:  # one by one: each write answers for itself
            if is_store_trouble(exc):
                raise
            self._db.rollback(conn)
        self._commit_each(conn, batch)  # out of the handler: no chained tracebacks

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        """Apply ``batch`` in one transaction; a migration in it commits what came
        before it and runs in transactions of its own.  What is committed leaves
        ``batch`` at once, so whatever fails later, a retry repeats nothing."""
        while batch:
            first = batch[0]
            if isinstance(first, _Migration):
                first.error = self._migrate(conn, first)
                del batch[0]
                first.done.set()
                continue
            self._db.begin(conn)
            written, end = self._apply(conn, batch)
            mark = self._db.mark_batch(conn)
            if mark is not None:
                self._in_doubt = (mark, end, written)
            conn.execute("COMMIT")
            self._in_doubt = None
            self._finished(batch, end, written)

    def _finished(self, batch: list[Any], end: int, written: int) -> None:
        """``batch[:end]`` (``written`` writes) is committed: it leaves the batch."""
        finished = batch[:end]
        del batch[:end]
        self.committed += written
        for item in finished:
            if item.__class__ is _Barrier:
                item.ok = True  # type: ignore[attr-defined]
                item.done.set()  # type: ignore[attr-defined]

    def _settle_doubt(self, conn: Any, batch: list[Any]) -> None:
        """The last COMMIT's outcome was unknown (the connection died during it): ask
        the database whether that batch's id is there.  If it is, the batch was
        committed and must not be applied again; if not, it is retried as usual."""
        mark, end, written = self._in_doubt
        self._in_doubt = None
        if self._db.was_committed(conn, mark):
            log.warning("store: the last batch (%d writes) was committed although the "
                        "connection was lost during its COMMIT; not writing it again",
                        written)
            self._finished(batch, end, written)

    def _apply(self, conn: sqlite3.Connection, batch: list[Any]) -> tuple[int, int]:
        """Run ``batch``'s writes up to its first migration, in the open transaction;
        return (writes applied, where it stopped)."""
        written = 0
        count = len(batch)
        i = 0
        while i < count:
            item = batch[i]
            if item.__class__ is not tuple:
                if isinstance(item, _Migration):
                    break
                i += 1  # a barrier: done with its segment
                continue
            i += 1
            kind = item[0]
            if kind is _ROW:
                prefix = item[1]
                rows = [item[2]]
                most = min(self._db.rows_per_insert,
                           self._db.max_values // max(1, len(item[2])))
                while (i < count and len(rows) < most and batch[i].__class__ is tuple
                       and batch[i][0] is _ROW and batch[i][1] is prefix):
                    rows.append(batch[i][2])
                    i += 1
                self._db.insert_rows(conn, prefix, rows)
                written += len(rows)
            elif kind is _ROWS:  # one tick's rows for one table
                prefix, rows = item[1], item[2]
                most = min(self._db.rows_per_insert,
                           self._db.max_values // max(1, len(rows[0])))
                for start in range(0, len(rows), most):
                    self._db.insert_rows(conn, prefix, rows[start:start + most])
                written += len(rows)
            elif kind is _CALL:
                item[1](conn)
                written += 1
            elif kind is _NOTIFY:
                self._db.notify(conn, item[1], f"{self.origin} {item[2]}")
                written += 1
            else:
                # A run of the same statement goes in one executemany (a C loop).
                run = [item[1]]
                while (i < count and batch[i].__class__ is tuple and batch[i][0] == kind):
                    run.append(batch[i][1])
                    i += 1
                if len(run) == 1:
                    conn.execute(kind, run[0])
                else:
                    conn.executemany(kind, run)
                written += len(run)
        return written, i

    def _commit_each(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        """The batch write by write, each in its own transaction; a failing write is
        dropped, counted and logged (:meth:`_reject`), a database problem raised
        as usual."""
        while batch:  # what is done leaves the batch, so a retry repeats nothing
            item = batch[0]
            try:
                self._commit(conn, [item])
            except BaseException as exc:  # whatever a write raises is the write's fault
                self._db.rollback(conn)
                if is_store_trouble(exc):
                    raise
                del batch[0]
                if item.__class__ is tuple and item[0] is _ROWS:
                    # A bad row in a run: each row on its own, so only it is dropped.
                    batch[0:0] = [(_ROW, item[1], row, item[3]) for row in item[2]]
                    continue
                if isinstance(item, _Migration):  # a bug in a step (not SQL): say so
                    item.error = f"{type(exc).__name__}: {exc}"
                    item.done.set()
                else:
                    self._reject(item, exc)
                continue
            del batch[0]

    def _reject(self, item: tuple[Any, ...], exc: BaseException) -> None:
        """Count a bad write and log it with its owner, once a minute per owner and
        kind of error (the rest counted in the next line)."""
        owner = item[-1] or "?"
        self.rejected += 1
        self.rejected_by[owner] = self.rejected_by.get(owner, 0) + 1
        key = (owner, type(exc).__name__)
        now = time.monotonic()
        last, quiet = self._logged.get(key, (None, 0))
        if last is not None and now - last < REJECT_LOG_SECONDS:
            self._logged[key] = (last, quiet + 1)
            return
        self._logged[key] = (now, 0)
        more = f" (and {quiet} more like it since the last report)" if quiet else ""
        # The text is repr()'d: a value may hold anything, a lone surrogate included,
        # which a log handler could not encode.  A function that raised gets its
        # traceback (a plugin's bug, to be found); a refused statement needs none.
        log.error("store: a write by %s was dropped: %s: %r in %s%s", owner,
                  type(exc).__name__, str(exc), _describe(item), more,
                  exc_info=exc if item[0] is _CALL and not isinstance(exc, self._db.errors)
                  else None)

    def _migrate(self, conn: Any, migration: _Migration) -> str | None:
        """Apply the steps ``migration`` lacks, each in its own transaction; the
        version is read again inside each step's transaction, under the database's
        lock (SQLite's write lock, PostgreSQL's advisory lock), so two processes
        starting at once apply each step exactly once.  Returns an error, or None."""
        db = self._db
        count = len(migration.steps)
        number = 0
        while number < count:
            try:
                db.begin_migration(conn)
                version = self._schema_version(conn, migration.owner)
                if version > count:
                    db.rollback(conn)
                    return (f"the database is at version {version}, newer than the "
                            f"{count} this chatd knows: was it written by a newer one?")
                if version == count:
                    conn.execute("COMMIT")
                    return None
                number = version + 1
                self._apply_step(conn, migration, number)
                conn.execute("COMMIT")
            except BaseException as exc:
                db.rollback(conn)
                if is_store_trouble(exc):
                    raise  # not the step's fault: retried with the batch
                refused = migration.guard.refused if migration.guard is not None else None
                return f"migration step {number} failed: {refused or exc}"
            log.log(logging.INFO if db.keeps_file else logging.DEBUG,
                    "store: %s schema now at version %d", migration.owner, number)
        return None

    @staticmethod
    def _schema_version(conn: Any, owner: str) -> int:
        row = conn.execute(
            "SELECT version FROM chatd_schema WHERE owner = ?", (owner,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _apply_step(self, conn: Any, migration: _Migration, number: int) -> None:
        """Step ``number`` of ``migration`` (its dialect's form), and its record."""
        step = migration.steps[number - 1]
        if isinstance(step, dict):
            step = step[self.dialect]
        with _guarded(conn, migration.guard):
            if callable(step):
                step(conn)
            else:
                for statement in self._db.statements(step):
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO chatd_schema (owner, version) VALUES (?, ?) "
            "ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
            (migration.owner, number),
        )

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
        self._dropping = False
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
#: The store's own table (the versions of every owner's migrations): nobody's to change.
_STORE_TABLES = frozenset({"chatd_schema", "chatd_batches"})


class TableGuard:
    """A SQLite authorizer for one plugin's SQL: it may create, change, write and drop
    only the tables (and indexes, views, triggers) named after it: ``owner`` or
    ``owner_*``.  Reads are free.  So a plugin's ``CREATE TABLE IF NOT EXISTS history``
    can never adopt the built-in history's table, and its writes cannot reach the
    accounts.  ``refused`` says what was refused last, for the error message.

    ``reserved`` names what is someone else's whatever its name: the built-ins'
    tables do not all follow the rule (moderation's ``room_bans`` would be a
    plugin ``room``'s), nor does the store's ``chatd_schema`` (a plugin ``chatd``'s).
    """

    __slots__ = ("owner", "prefix", "refused", "reserved")

    def __init__(self, owner: str, reserved: frozenset[str] = frozenset()) -> None:
        self.owner = owner
        self.prefix = re.sub(r"\W", "_", owner.lower())
        self.reserved = _STORE_TABLES | {name.lower() for name in reserved}
        self.refused: str | None = None

    def owns(self, name: str) -> bool:
        name = name.lower()
        return name not in self.reserved and (
            name == self.prefix or name.startswith(self.prefix + "_"))

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


#: Tell the database's trouble from a write's fault, one check per backend (the
#: PostgreSQL dialect adds its own when it is loaded).
TROUBLE_CHECKS: list[Callable[[BaseException], bool]] = [store_sqlite.is_trouble]


def is_store_trouble(exc: BaseException) -> bool:
    """The database's problem, not the write's (the disk, a lock, a corrupt file, a
    lost connection): the batch waits and is retried instead of the write being
    dropped."""
    return any(check(exc) for check in TROUBLE_CHECKS)


def _describe(item: tuple[Any, ...]) -> str:
    """What a write was, for the log: its statement (without values) or function."""
    if item[0] is _CALL:
        function = item[1]
        return f"the function {getattr(function, '__qualname__', None) or function!r}"
    statement = item[1] if item[0] is _ROW or item[0] is _ROWS else item[0]
    text = repr(statement)
    return text if len(text) <= 200 else text[:197] + "..."
