"""The store's PostgreSQL dialect: the same :class:`chatd.store.Store` on a server that
many chatd processes share (``storage.url``).

Imported only when a URL is configured, and the only module that imports psycopg
(3): the core still needs nothing but pluggy and PyYAML.  The writer thread, its
batching, ``queue_max``, the problem report and the rejected-by-owner counts are
the store's, unchanged; what this module supplies is what differs:

* **Connections**: psycopg in autocommit mode (the writer sends its own ``BEGIN``
  and ``COMMIT``, as on SQLite), with ``connect_timeout`` and TCP keepalives so a
  server that vanished from the network is noticed; the password is never
  logged (:func:`redact`: ``postgresql://user:***@host/db``).
* **SQL**: statements use ``?`` on both backends; :func:`translate` turns them into
  psycopg's ``%s`` once per distinct statement (cached), leaving quoted literals,
  quoted names and comments alone and doubling every ``%``.  Write functions and
  migration steps get a :class:`PgConnection`, on which ``execute(sql, params)`` ->
  a cursor with ``fetchall()``, ``fetchone()`` and ``rowcount`` behaves as on
  SQLite.
* **Errors**: the database's trouble (no connection, the server shutting down, a
  full disk, out of memory, a serialization failure: classes 08, 53, 57, 58, 40,
  XX and a few more; see :func:`is_trouble`) keeps the batch and retries it; a
  statement's fault (bad SQL, a constraint, a value out of range) rejects that
  write only.
* **Reads** run on the reader thread's connection with ``statement_timeout`` set
  to the read's timeout, so the server itself gives up on a slow query and the
  thread is free for the next; the loop's timer answers the asker anyway.
* **Change notices** (:meth:`chatd.store.Store.notify`) are
  ``SELECT pg_notify(channel, origin || ' ' || payload)`` inside the batch's
  transaction: delivered exactly when the change they announce is committed, and
  never if it is not.  :class:`Listener` is one thread per store, with its own
  autocommit connection, that ``LISTEN``\\s and hands other processes' notices to the
  loop; after losing its connection it reconnects with a growing pause and tells
  every callback ``None`` (reload everything: notices sent meanwhile are lost).
* **Migrations**: each step's transaction takes ``pg_advisory_xact_lock`` first and
  reads the version again inside it, so two processes starting at once apply each
  step exactly once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .config_rules import redact_url

log = logging.getLogger("chatd.store")

__all__ = ["PgConnection", "PostgresDialect", "is_trouble", "redact", "translate"]

#: The advisory lock every migration step (and the store's own tables' creation)
#: takes: one number, chatd's, in the database's advisory-lock space.
MIGRATION_LOCK = 0x63686174640001  # "chatd" + 1
#: PostgreSQL's limit on one statement's parameters.
MAX_PARAMETERS = 65535
#: Connection options chatd sets unless the URL says otherwise: give up connecting
#: after a few seconds, and notice a server gone from the network (keepalives).
DEFAULT_OPTIONS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "application_name": "chatd",
}
#: The listener's pauses between reconnection attempts.
LISTEN_RETRY_FIRST = 0.1
LISTEN_RETRY_MAX = 5.0
#: How long the listener waits for notices before looking at new channels or a stop.
LISTEN_POLL_SECONDS = 0.5

#: SQLSTATE classes (two characters) and codes that are the database's trouble, not
#: the statement's: connection (08), resources: disk full, out of memory, too many
#: connections (53), operator intervention: shutdown, cancel (57), system: I/O (58),
#: transaction rollback: serialization, deadlock (40), internal (XX), invalid
#: authorization: a wrong password (28), no such database yet (3D000), lock not
#: available (55P03), read-only transaction on a standby (25006).
_TROUBLE_CLASSES = frozenset({"08", "53", "57", "58", "40", "XX", "28"})
_TROUBLE_CODES = frozenset({"3D000", "55P03", "25006"})


def is_trouble(exc: BaseException) -> bool:
    """The database's problem, not the write's: retry the batch later."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # raised by the client: a lost or closed connection, a timeout
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in _TROUBLE_CLASSES or state in _TROUBLE_CODES


def redact(url: str) -> str:
    """``url`` without its password (``postgresql://user:***@host/db``)."""
    return redact_url(url)


# -- ? placeholders -----------------------------------------------------------------

_TOKENS = re.compile(r"""'(?:[^']|'')*'?|"(?:[^"]|"")*"?|--[^\n]*|/\*.*?(?:\*/|\Z)|\?|%""",
                     re.DOTALL)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``sql`` with psycopg's placeholders: each ``?`` outside quoted literals, quoted
    names and comments becomes ``%s``, every ``%`` becomes ``%%`` (psycopg reads
    them everywhere).  Cached: a statement is translated once."""

    def one(match: re.Match[str]) -> str:
        token = match.group()
        if token == "?":
            return "%s"
        return token.replace("%", "%%")

    return _TOKENS.sub(one, sql)


class PgConnection:
    """The writer's (and the reader's) psycopg connection, as write functions and
    migration steps see it: ``execute(sql, params)`` with ``?`` placeholders -> a
    cursor (``fetchall()``, ``fetchone()``, ``rowcount``), as on SQLite.  ``close()``
    is refused (the store's job).  ``set_authorizer(guard)``: a plugin's
    :class:`chatd.store.TableGuard` checks each statement first
    (:meth:`chatd.store.TableGuard.check_sql`)."""

    __slots__ = ("guard", "raw", "statement_timeout")

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.guard: Any = None
        self.statement_timeout = 0

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> psycopg.Cursor[Any]:
        guard = self.guard
        if guard is not None:
            guard.check_sql(sql)
        cursor = self.raw.cursor()
        if params:
            cursor.execute(translate(sql), params)
        else:  # no parameters: psycopg sends the text as it is (% and all)
            cursor.execute(sql)  # type: ignore[arg-type]
        return cursor

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        guard = self.guard
        if guard is not None:
            guard.check_sql(sql)
        cursor = self.raw.cursor()
        cursor.executemany(translate(sql), seq)
        return cursor

    def set_authorizer(self, guard: Any) -> None:
        self.guard = guard

    def close(self) -> None:
        raise psycopg.ProgrammingError("a write function may not close the store's connection")


def _close(conn: PgConnection) -> None:
    with contextlib.suppress(Exception):
        conn.raw.close()


class PostgresDialect:
    """PostgreSQL at ``url`` (see the module docstring)."""

    name = "postgresql"
    errors: tuple[type[BaseException], ...] = (psycopg.Error,)
    max_values = MAX_PARAMETERS
    keeps_file = True

    def __init__(self, url: str, *, connect_timeout: float | None = None) -> None:
        try:
            given = conninfo_to_dict(url)  # a malformed URL fails here, at start
        except psycopg.Error as exc:
            raise ValueError(f"storage.url: not a PostgreSQL URL: {redact(url)}") from exc
        options = dict(DEFAULT_OPTIONS)
        if connect_timeout is not None:
            options["connect_timeout"] = str(max(1, round(connect_timeout)))
        extra = {k: v for k, v in options.items() if k not in given}
        self._conninfo = make_conninfo(url, **extra)
        self.where = redact(url)
        self._secret = str(given.get("password") or "")
        self.listener: Listener | None = None

    def prepare(self) -> None:
        """Nothing to make beforehand: the server keeps its own files."""

    def shutdown(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()

    # -- connections -------------------------------------------------------------------

    def open_raw(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._conninfo, autocommit=True)

    def connect(self, *, reader: bool = False,
                over_time: Callable[[], int] | None = None) -> PgConnection:
        conn = PgConnection(self.open_raw())
        if not reader:
            try:
                with conn.raw.transaction():
                    conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                    conn.raw.execute("CREATE TABLE IF NOT EXISTS chatd_schema "
                                     "(owner TEXT PRIMARY KEY, version INTEGER NOT NULL)")
            except BaseException:
                _close(conn)
                raise
        return conn

    close = staticmethod(_close)

    def begin(self, conn: PgConnection) -> None:
        conn.raw.execute("BEGIN")

    def begin_migration(self, conn: PgConnection) -> None:
        conn.raw.execute("BEGIN")
        conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def rollback(self, conn: PgConnection) -> None:
        with contextlib.suppress(Exception):
            if not conn.raw.closed:
                conn.raw.rollback()

    def reopen_after(self, conn: PgConnection, exc: BaseException) -> bool:
        """A connection that is closed or broken (lost, or the server restarted)."""
        return bool(conn.raw.closed or conn.raw.broken)

    def describe_error(self, exc: BaseException) -> str:
        """``exc`` in words, one line, never with the password."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def multirow(self, prefix: str, columns: int, rows: int) -> str:
        return _multirow(prefix, columns, rows)

    def notify(self, conn: PgConnection, channel: str, payload: str) -> None:
        conn.raw.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def statements(self, script: str) -> list[str]:
        """A migration step is sent whole (psycopg runs several statements in one
        query when there are no parameters); the guard checks each."""
        return [script] if script.strip() else []

    # -- reads -------------------------------------------------------------------------

    @staticmethod
    def run_read(conn: PgConnection, sql: str, params: Sequence[Any],
                 timeout: float) -> list[tuple[Any, ...]]:
        """(The reader thread.)  One query; the server cancels it after ``timeout``."""
        wanted = max(1, int(timeout * 1000))
        if conn.statement_timeout != wanted:
            conn.raw.execute(f"SET statement_timeout = {wanted}")
            conn.statement_timeout = wanted
        return conn.execute(sql, params).fetchall()

    def describe_read_error(self, exc: BaseException) -> str:
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return "the read took too long"
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return f"no connection to the database ({self.describe_error(exc)})"
        return f"the database cannot be read ({self.describe_error(exc)})"

    # -- change notices ----------------------------------------------------------------

    def listen(self, channels: dict[str, list[Callable[[str | None], None]]], origin: str,
               post: Callable[[Callable[[], None]], None] | None) -> None:
        """Start the listener thread (once), or make it LISTEN to new channels."""
        if self.listener is None:
            self.listener = Listener(self.open_raw, channels, origin, post,
                                     self.describe_error)
        self.listener.wake()


@functools.lru_cache(maxsize=64)
def _multirow(prefix: str, columns: int, rows: int) -> str:
    """``INSERT INTO t (a, b) VALUES (?, ?), (?, ?)...`` for ``rows`` rows."""
    one = "(" + ", ".join("?" * columns) + ")"
    return prefix + ", ".join([one] * rows)


class Listener:
    """One thread per store: ``LISTEN`` on every channel of ``channels`` and hand each
    other process's notice to its callbacks on the loop (through ``post``)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]],
                 channels: dict[str, list[Callable[[str | None], None]]], origin: str,
                 post: Callable[[Callable[[], None]], None] | None,
                 describe: Callable[[BaseException], str]) -> None:
        self._connect = connect
        self._channels = channels
        self._origin = origin
        self._post = post
        self._describe = describe
        self._stop = threading.Event()
        self._changed = True
        #: Notices handed on, and times the connection was lost and made again.
        self.received = 0
        self.reconnects = 0
        self._conn: psycopg.Connection[Any] | None = None
        self.ready = threading.Event()  # set once it listens (tests wait for it)
        self._thread = threading.Thread(target=self._run, name="chatd-store-listen",
                                        daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New channels to LISTEN to: picked up within ``LISTEN_POLL_SECONDS``."""
        self._changed = True
        self.ready.clear()

    def close(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.cancel()
        self._thread.join(2.0)

    def _run(self) -> None:
        pause = LISTEN_RETRY_FIRST
        lost = False
        while not self._stop.is_set():
            try:
                conn = self._conn = self._connect()
            except Exception as exc:
                log.debug("store: listener cannot connect: %s", self._describe(exc))
                self._stop.wait(pause)
                pause = min(pause * 2, LISTEN_RETRY_MAX)
                continue
            pause = LISTEN_RETRY_FIRST
            try:
                listening: set[str] = set()
                self._changed = True
                if lost:  # notices sent while we were away are gone: reload everything
                    self.reconnects += 1
                    log.warning("store: change notices: connection back; reloading")
                    self._tell_all(None)
                self._listen(conn, listening)
            except Exception as exc:
                if self._stop.is_set():
                    break
                log.warning("store: change notices: connection lost (%s); reconnecting",
                            self._describe(exc))
                lost = True
            finally:
                self._conn = None
                with contextlib.suppress(Exception):
                    conn.close()

    def _listen(self, conn: psycopg.Connection[Any], listening: set[str]) -> None:
        while not self._stop.is_set():
            if self._changed:
                self._changed = False
                for channel in list(self._channels):
                    if channel not in listening:
                        conn.execute(f'LISTEN "{channel}"')
                        listening.add(channel)
                self.ready.set()
            for notice in conn.notifies(timeout=LISTEN_POLL_SECONDS):
                self._hand_on(notice.channel, notice.payload)
            if conn.closed or conn.broken:
                raise psycopg.OperationalError("the connection was closed")
            # notifies() returns quietly when the server goes: probe it.
            conn.execute("SELECT 1")

    def _hand_on(self, channel: str, payload: str) -> None:
        origin, _, rest = payload.partition(" ")
        if origin == self._origin:
            return  # our own change: already in force here
        self.received += 1
        for callback in self._channels.get(channel, ()):
            self._call(callback, rest)

    def _tell_all(self, payload: str | None) -> None:
        for callbacks in list(self._channels.values()):
            for callback in callbacks:
                self._call(callback, payload)

    def _call(self, callback: Callable[[str | None], None], payload: str | None) -> None:
        def deliver() -> None:
            try:
                callback(payload)
            except Exception:
                log.exception("store: a change-notice callback failed")

        if self._post is not None:
            self._post(deliver)
        else:
            deliver()


def wait_ready(dialect: PostgresDialect, timeout: float = 5.0) -> bool:
    """Until the listener listens on every channel asked for so far (tests)."""
    deadline = time.monotonic() + timeout
    while dialect.listener is None and time.monotonic() < deadline:
        time.sleep(0.01)
    listener = dialect.listener
    return listener is not None and listener.ready.wait(max(0.0, deadline - time.monotonic()))
