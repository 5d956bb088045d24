"""The store's SQLite dialect: how :class:`chatd.store.Store` opens, reads and writes an
SQLite file (or a database in memory).

The writer, its batching and its failure policy are the store's (chatd/store.py) and
the same on every backend; what differs per database lives in a dialect object
with one small method per difference (connect, begin, error classification, the
multi-row insert, change notices, the reader's query).  This one is the embedded
default: its methods are what the store did before there was a second backend,
so the SQLite hot path costs what it always did.

Reads on the loop (:meth:`chatd.store.Store.read`) run on a connection of their
own (WAL: readers never wait for the writer) and are cut after ``read_timeout``
by SQLite's progress handler; reads off the loop (``Store.ask``) on the reader
thread's connection, cut the same way at their own timeout.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import shlex
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("chatd.store")

__all__ = ["SqliteDialect"]

#: Modes of what the store creates: the database holds every stored line.
FOLDER_MODE = 0o700
FILE_MODE = 0o600
#: SQLite allows 32,766 values per statement.
MAX_VALUES = 32766
#: A multi-row INSERT of at most this many rows is made for its own count (so at most
#: this many such statements exist); larger runs go in chunks of powers of two.
_WHOLE_UP_TO = 32
#: What a column of a batch is to :func:`_multirow`: a value per row, NULL in every
#: row, or one text every row shares.
_VARYING, _NULL, _SHARED = 0, 1, 2

_memory_names = itertools.count(1)


class _WriterConnection(sqlite3.Connection):
    """The writer's connection, as write functions get it: they may run statements,
    not close it (that is the store's job: :func:`close`)."""

    def close(self) -> None:
        raise sqlite3.ProgrammingError("a write function may not close the store's connection")


def close(conn: Any) -> None:
    """Really close a connection (the writer's refuses ``close()``), errors ignored."""
    with contextlib.suppress(sqlite3.Error):
        sqlite3.Connection.close(conn)


class SqliteDialect:
    """SQLite, from a file (``path``) or in memory (``path`` None)."""

    name = "sqlite"
    #: What the database raises (the writer catches these as the database's answer).
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    max_values = MAX_VALUES
    #: Rows per multi-row INSERT (at most).  Each statement step releases and retakes
    #: the GIL, and while the event loop is busy, retaking it waits for the
    #: interpreter's switch interval (5 ms): so the writer's throughput is rows per
    #: statement, not rows per second of SQLite work.
    rows_per_insert = 1000

    def __init__(self, path: Path | None, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        if path is None:
            # A named shared-cache memory database: the writer's and the reader's
            # connections see the same data.
            self.uri = f"file:chatd-memory-{next(_memory_names)}?mode=memory&cache=shared"
            self._keeper: sqlite3.Connection | None = sqlite3.connect(
                self.uri, uri=True, check_same_thread=False)
        else:
            self.uri = path.resolve().as_uri()
            self._keeper = None

    @property
    def where(self) -> str:
        """The database, as logs and problem reports name it."""
        return str(self.path) if self.path is not None else "the database"

    @property
    def keeps_file(self) -> bool:
        return self.path is not None

    def prepare(self) -> None:
        if self.path is not None:
            _prepare_private(self.path)

    def shutdown(self) -> None:
        if self._keeper is not None:
            self._keeper.close()
            self._keeper = None

    # -- connections -------------------------------------------------------------------

    def connect(self, *, reader: bool = False,
                over_time: Callable[[], int] | None = None) -> sqlite3.Connection:
        # Autocommit mode: transactions are the explicit BEGIN/COMMIT of the writer.
        # The reader never waits for a lock (timeout 0); the writer waits for another
        # process (an operator's sqlite3 shell) a few seconds.
        conn = sqlite3.connect(self.uri, uri=True, timeout=0 if reader else 5.0,
                               isolation_level=None,
                               factory=sqlite3.Connection if reader else _WriterConnection)
        try:
            if reader:
                if over_time is not None:
                    conn.set_progress_handler(over_time, 1000)
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
            close(conn)
            raise
        return conn

    close = staticmethod(close)

    def begin(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def begin_migration(self, conn: sqlite3.Connection) -> None:
        """A migration step's transaction (IMMEDIATE: the file's write lock, so a step
        is applied by one process only)."""
        conn.execute("BEGIN IMMEDIATE")

    def mark_batch(self, conn: sqlite3.Connection) -> None:
        """SQLite: a COMMIT's outcome is never in doubt (the file is ours, no network)."""
        return None

    def was_committed(self, conn: sqlite3.Connection, mark: str) -> bool:
        return False

    def rollback(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")

    def reopen_after(self, conn: sqlite3.Connection, exc: BaseException) -> bool:
        """Whether the writer must open the database again after ``exc``: a corrupt or
        replaced file (a DatabaseError that is not an OperationalError)."""
        return isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.OperationalError)

    def describe_error(self, exc: BaseException) -> str:
        return str(exc)

    def insert_rows(self, conn: sqlite3.Connection, prefix: str,
                    rows: list[Sequence[Any]]) -> None:
        """Rows queued together for one table, as multi-row INSERTs (at most
        ``rows_per_insert`` rows in all).

        Three things make a row cheap for SQLite, and the writer's CPU is taken from
        the event loop on a small machine (``bench/sqlite_rows.py`` measures them):

        * statements of a few sizes only, so each is compiled once: the rows go in
          chunks of powers of two down to ``_WHOLE_UP_TO`` rows, the rest in one (a
          batch of 175 rows is 128 + 32 + 15), each chunk's statement kept in the
          connection's statement cache.  A statement made for every batch's own
          count cost more to compile than its rows to store;
        * a column that is NULL in every row is written as a literal ``NULL``;
        * a column holding one text in every row (history's room, kind, target) is
          bound once, as a numbered parameter every row names.

        Bound values are what costs (each is converted and copied).  The rows are
        turned into columns and back by C loops (``zip``, ``tuple.count``,
        ``chain``)."""
        count = len(rows)
        if count < _WHOLE_UP_TO:  # a few rows: looking at the columns costs more
            conn.execute(_multirow(prefix, (_VARYING,) * len(rows[0]), count),
                         list(itertools.chain.from_iterable(rows)))
            return
        shape: list[int] = []
        shared: list[Any] = []
        varying: list[tuple[Any, ...]] = []
        for column in zip(*rows, strict=True):
            first = column[0]
            if first is None:
                if column.count(None) == count:
                    shape.append(_NULL)
                    continue
            elif first.__class__ is str and column.count(first) == count:
                shape.append(_SHARED)  # == a str in every row: a str in every row
                shared.append(first)
                continue
            shape.append(_VARYING)
            varying.append(column)
        values = list(itertools.chain.from_iterable(zip(*varying, strict=True)))
        width = len(varying)
        kind = tuple(shape)
        start = 0
        while start < count:
            left = count - start
            size = left if left <= _WHOLE_UP_TO else 1 << (left.bit_length() - 1)
            conn.execute(_multirow(prefix, kind, size),
                         shared + values[start * width:(start + size) * width])
            start += size

    def notify(self, conn: sqlite3.Connection, channel: str, payload: str) -> None:
        """SQLite: one process, nobody else to tell."""

    def statements(self, script: str) -> list[str]:
        return split_statements(script)

    # -- reads -------------------------------------------------------------------------

    @staticmethod
    def run_read(conn: sqlite3.Connection, sql: str, params: Sequence[Any],
                 timeout: float) -> list[tuple[Any, ...]]:
        """(The reader thread.)  One query, cut by the progress handler after ``timeout``."""
        deadline = time.monotonic() + timeout
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.set_progress_handler(None, 0)

    @staticmethod
    def describe_read_error(exc: BaseException) -> str:
        if isinstance(exc, sqlite3.OperationalError) and "interrupted" in str(exc):
            return "the read took too long"
        return "the database could not answer the read"


def is_trouble(exc: BaseException) -> bool:
    """The database's problem, not the write's (the disk, a lock, a corrupt file)."""
    return isinstance(exc, sqlite3.Error) and (
        (type(exc) is sqlite3.DatabaseError and str(exc) != REFUSED_BY_GUARD)
        or _is_disk_trouble(exc))


#: What SQLite raises (as a bare DatabaseError) when a TableGuard refuses a
#: statement: the statement's fault, never the database's.
REFUSED_BY_GUARD = "not authorized"


def _is_disk_trouble(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("disk", "full", "readonly", "read-only", "locked",
                                         "unable to open", "i/o"))


@functools.lru_cache(maxsize=64)
@functools.lru_cache(maxsize=512)
def _multirow(prefix: str, shape: tuple[int, ...], rows: int) -> str:
    """``INSERT INTO t (a, b, c) VALUES (?1, ?2, NULL), (?1, ?3, NULL)...`` for
    ``rows`` rows: per column, as ``shape`` says, a value of its own in each row
    (``_VARYING``), ``NULL`` in every row (``_NULL``) or one value every row names
    (``_SHARED``: the first parameters, in column order).  Cached: the writer sends
    the same few shapes again and again."""
    if _SHARED not in shape:  # plain ? marks: the common small batches
        one = "(" + ", ".join(["NULL" if kind == _NULL else "?" for kind in shape]) + ")"
        return prefix + ", ".join([one] * rows)
    number = shape.count(_SHARED)
    shared: dict[int, int] = {}
    for column, kind in enumerate(shape):
        if kind == _SHARED:
            shared[column] = len(shared) + 1
    out = []
    for _ in range(rows):
        marks = []
        for column, kind in enumerate(shape):
            if kind == _NULL:
                marks.append("NULL")
            elif kind == _SHARED:
                marks.append(f"?{shared[column]}")
            else:
                number += 1
                marks.append(f"?{number}")
        out.append("(" + ", ".join(marks) + ")")
    return prefix + ", ".join(out)


def split_statements(script: str) -> list[str]:
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


# -- the file is the server's alone -----------------------------------------------------


def _prepare_private(path: Path) -> None:
    """Make the database's missing folders (0700) and an empty database file (0600),
    whatever the umask; warn about a folder or file others can get into.

    Never raises: a folder that cannot be made is the writer's to report (it
    retries opening the database and says why it cannot).
    """
    try:
        _make_private_folders(path.parent)
        _create_private_file(path)
    except OSError as exc:
        log.debug("store: preparing %s: %s (the writer reports it)", path, exc)
        return
    for what, target in (("folder", path.parent), ("file", path),
                         ("file", path.with_name(path.name + "-wal")),
                         ("file", path.with_name(path.name + "-shm"))):
        _warn_if_open(what, target)


def _make_private_folders(folder: Path) -> None:
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by someone else
            os.mkdir(made, FOLDER_MODE)
            os.chmod(made, FOLDER_MODE)  # the umask may have taken bits off


def _create_private_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def _warn_if_open(what: str, target: Path) -> None:
    """A loud warning for a database folder or file that others may read: the data
    is every stored line (PostgreSQL refuses to start on such a data folder)."""
    try:
        mode = os.stat(target).st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        wanted = FOLDER_MODE if what == "folder" else FILE_MODE
        log.warning("store: the database %s %s is open to other users (mode %04o): it "
                    "holds every stored line; chmod %o %s", what, target, mode, wanted,
                    shlex.quote(str(target)))
