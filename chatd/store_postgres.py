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
* **Rows** queued together by :meth:`chatd.store.Store.insert` (history's row per
  line) go in with ``COPY ... FROM STDIN`` (psycopg's ``cursor.copy``), the
  fastest of four ways measured by ``bench/store_batch.py`` (history-like rows,
  one transaction per batch, a local cluster with fsync off, 2 cores; rows/s
  for batches of 1k / 10k rows): COPY 132k / 236k, executemany in an explicit
  pipeline 72k / 97k, executemany 63k / 73k, multi-row INSERT of 1000 rows per
  statement 25k / 39k (psycopg adapts each of the many parameters).
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
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .config_rules import redact_text, redact_url

log = logging.getLogger("chatd.store")

__all__ = ["PgConnection", "PostgresDialect", "is_trouble", "parse_url", "redact", "translate"]

#: The advisory lock every migration step (and the store's own tables' creation)
#: takes: one number, chatd's, in the database's advisory-lock space.
MIGRATION_LOCK = 0x63686174640001  # "chatd" + 1
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
#: Batch ids (chatd_batches) are kept this long, pruned every so many batches: long
#: enough for any reconnection to find the id of the batch it was committing.
BATCH_KEEP_SECONDS = 3600
BATCH_PRUNE_EVERY = 1000
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


def parse_url(url: str) -> dict[str, Any]:
    """``url``'s libpq parameters; ValueError, in words without any password (psycopg's
    own may quote a token of the URL, the password included), for a malformed one."""
    try:
        return conninfo_to_dict(url)
    except psycopg.Error as exc:
        reason = redact_text(" ".join(str(exc).split()), url)
        raise ValueError(f"storage.url: not a usable PostgreSQL URL ({reason}): "
                         f"{redact(url)}") from None


def redact(url: str) -> str:
    """``url`` without its password (``postgresql://user:***@host/db``)."""
    return redact_url(url)


# -- ? placeholders -----------------------------------------------------------------

#: Where something starts that is not plain SQL text: a quoted literal (``E'...'``
#: with backslash escapes, ``'...'``), a quoted name, a dollar-quoted string
#: (``$$...$$``, ``$tag$...$tag$``; never inside a name such as ``t$x$``), a comment
#: (``--`` to the end of the line, ``/* */`` nested as PostgreSQL nests them), a
#: placeholder, a percent sign.
_START = re.compile(r"""(?<![A-Za-z0-9_$])[Ee]'|(?<![A-Za-z0-9_$])\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$"""
                    r"""|['"?%]|--|/\*""")
_NESTED = re.compile(r"/\*|\*/")


def _skip(sql: str, start: int, token: str) -> int:
    """The index just after the quoted or commented run that starts at ``start`` with
    ``token`` (the end of ``sql`` if it is not closed: the server then says so)."""
    end = len(sql)
    if token == "--":
        newline = sql.find("\n", start)
        return end if newline < 0 else newline + 1
    if token == "/*":
        depth, at = 0, start
        for match in _NESTED.finditer(sql, start):
            depth += 1 if match.group() == "/*" else -1
            at = match.end()
            if depth == 0:
                return at
        return end
    if token.startswith("$"):
        close = sql.find(token, start + len(token))
        return end if close < 0 else close + len(token)
    quote = token[-1]
    escapes = token[0] in "Ee"
    at = start + len(token)
    while at < end:
        char = sql[at]
        if escapes and char == "\\":
            at += 2
            continue
        if char == quote:
            if at + 1 < end and sql[at + 1] == quote:
                at += 2
                continue
            return at + 1
        at += 1
    return end


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``sql`` with psycopg's placeholders: each ``?`` outside quoted literals, quoted
    names, dollar-quoted strings and comments becomes ``%s`` (``??`` is two), every
    ``%`` becomes ``%%`` (psycopg reads them everywhere, quotes or not).  Cached: a
    statement is translated once."""
    out: list[str] = []
    at = 0
    while (match := _START.search(sql, at)) is not None:
        out.append(sql[at:match.start()])
        token = match.group()
        if token == "?":
            out.append("%s")
            at = match.end()
        elif token == "%":
            out.append("%%")
            at = match.end()
        else:
            at = _skip(sql, match.start(), token)
            out.append(sql[match.start():at].replace("%", "%%"))
    out.append(sql[at:])
    return "".join(out)


class PgConnection:
    """The writer's (and the reader's) psycopg connection, as write functions and
    migration steps see it: ``execute(sql, params)`` with ``?`` placeholders -> a
    cursor (``fetchall()``, ``fetchone()``, ``rowcount``), as on SQLite.  ``close()``
    is refused (the store's job).  ``set_authorizer(guard)``: a plugin's
    :class:`chatd.store.TableGuard` checks each statement first
    (:func:`check_owned`)."""

    __slots__ = ("guard", "raw", "statement_timeout")

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.guard: Any = None
        self.statement_timeout = 0

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> psycopg.Cursor[Any]:
        guard = self.guard
        if guard is not None:
            check_owned(guard, sql)
        cursor = self.raw.cursor()
        if params:
            cursor.execute(translate(sql), params)
        else:  # no parameters: psycopg sends the text as it is (% and all)
            cursor.execute(sql)  # type: ignore[arg-type]
        return cursor

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        guard = self.guard
        if guard is not None:
            check_owned(guard, sql)
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
    max_values = 1 << 30  # COPY has no parameters: no limit but the batch
    #: Rows per COPY, at most (the batch's own limit, batch_max, comes first).
    rows_per_insert = 100_000
    keeps_file = True

    def __init__(self, url: str, *, connect_timeout: float | None = None) -> None:
        given = parse_url(url)  # a malformed URL fails here, at start
        options = dict(DEFAULT_OPTIONS)
        if connect_timeout is not None:
            options["connect_timeout"] = str(max(1, round(connect_timeout)))
        extra = {k: v for k, v in options.items() if k not in given}
        self._conninfo = make_conninfo(url, **extra)
        self.where = redact(url)
        self._url = url
        self._secret = str(given.get("password") or "")
        self.listener: Listener | None = None
        #: Batches marked so far, and this dialect's part of their ids.
        self._batches = 0
        self._origin = os.urandom(6).hex()

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
                    conn.raw.execute("CREATE TABLE IF NOT EXISTS chatd_batches (id TEXT "
                                     "PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now())")
            except BaseException:
                _close(conn)
                raise
        return conn

    close = staticmethod(_close)

    def begin(self, conn: PgConnection) -> None:
        conn.raw.execute("BEGIN")

    def mark_batch(self, conn: PgConnection) -> str:
        """Record this batch's id in its own transaction (decision: nothing written
        twice): if the connection dies during COMMIT, :meth:`was_committed` tells
        whether it landed.  Every ``BATCH_PRUNE_EVERY`` batches, ids older than
        ``BATCH_KEEP_SECONDS`` go."""
        self._batches += 1
        mark = f"{self._origin}-{self._batches}"
        conn.raw.execute("INSERT INTO chatd_batches (id) VALUES (%s)", (mark,))
        if self._batches % BATCH_PRUNE_EVERY == 0:
            conn.raw.execute("DELETE FROM chatd_batches WHERE at < now() - "
                             f"interval '{BATCH_KEEP_SECONDS} seconds'")
        return mark

    def was_committed(self, conn: PgConnection, mark: str) -> bool:
        return conn.raw.execute("SELECT 1 FROM chatd_batches WHERE id = %s",
                                (mark,)).fetchone() is not None

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
        return redact_text(text, self._url)

    def insert_rows(self, conn: PgConnection, prefix: str,
                    rows: list[Sequence[Any]]) -> None:
        """Rows queued together for one table, through ``COPY ... FROM STDIN``: the
        fastest of the ways measured (bench/store_batch.py, see the module docstring)."""
        with conn.raw.cursor().copy(_copy_statement(prefix)) as copy:
            write = copy.write_row
            for row in rows:
                write(row)

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
        # Short and the same for everyone: the asker is a chat user, the detail (host,
        # port, SQL) goes to the log (chatd.store_reads).
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return "no connection to the database"
        return "the database could not answer the read"

    # -- change notices ----------------------------------------------------------------

    def listen(self, channels: dict[str, list[Callable[[str | None], None]]], origin: str,
               post: Callable[[Callable[[], None]], None] | None) -> None:
        """Start the listener thread (once), or make it LISTEN to new channels."""
        if self.listener is None:
            self.listener = Listener(self.open_raw, channels, origin, post,
                                     self.describe_error)
        self.listener.wake()


@functools.lru_cache(maxsize=64)
def _copy_statement(prefix: str) -> str:
    """``INSERT INTO t (a, b) VALUES `` (what :meth:`chatd.store.Store.insert` queues,
    plain names only) -> ``COPY t (a, b) FROM STDIN``."""
    target = prefix.removeprefix("INSERT INTO ").removesuffix(" VALUES ")
    return f"COPY {target} FROM STDIN"


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
        """Connect, listen, and after any failure wait before the next attempt: the
        pause doubles (``LISTEN_RETRY_FIRST`` to ``LISTEN_RETRY_MAX``) and starts
        again only after a connection that held for ``LISTEN_RETRY_MAX``, so a
        connection that is accepted and cut at once (a flapping network, a proxy,
        an operator terminating backends) costs neither a reconnection storm nor a
        "reload everything" storm on every process."""
        pause = LISTEN_RETRY_FIRST
        lost = False
        while not self._stop.is_set():
            self.ready.clear()
            try:
                conn = self._conn = self._connect()
            except Exception as exc:
                log.debug("store: listener cannot connect: %s", self._describe(exc))
                lost = True  # once it can: what was missed meanwhile is reloaded
                self._stop.wait(pause)
                pause = min(pause * 2, LISTEN_RETRY_MAX)
                continue
            since = time.monotonic()
            try:
                self._changed = True
                self._listen(conn, set(), lost)
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
            if time.monotonic() - since >= LISTEN_RETRY_MAX:
                pause = LISTEN_RETRY_FIRST  # it held: the next loss is a fresh one
            self._stop.wait(pause)
            pause = min(pause * 2, LISTEN_RETRY_MAX)

    def _listen(self, conn: psycopg.Connection[Any], listening: set[str], lost: bool) -> None:
        """LISTEN, then hand notices on until the connection fails.  After a lost
        connection, every callback gets None once LISTEN is back: a reload from
        then on misses nothing (what changes after it is announced)."""
        while not self._stop.is_set():
            if self._changed:
                self._changed = False
                for channel in list(self._channels):
                    if channel not in listening:
                        conn.execute(f'LISTEN "{channel}"')
                        listening.add(channel)
                if lost:  # notices sent while we were away are gone: reload everything
                    lost = False
                    self.reconnects += 1
                    log.warning("store: change notices: connection back; reloading")
                    self._tell_all(None)
                self.ready.set()
            for notice in conn.notifies(timeout=LISTEN_POLL_SECONDS):
                self._hand_on(notice.channel, notice.payload)
            if conn.closed or conn.broken:
                raise psycopg.OperationalError("the connection was closed")

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


# -- whose tables: a plugin's SQL touches only its own (no authorizer here) --------------

_SCAN = re.compile(r"""
    (?P<lit>'(?:[^']|'')*')
  | (?P<ident>"(?:[^"]|"")+")
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
#: The first word of a statement a plugin may run, and what it is.
_READS = frozenset({"SELECT", "WITH", "VALUES"})
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})
#: Functions no plugin calls: the server's own (pg_*: terminate backends, advisory
#: locks, read files), settings, sequences of others, large objects, other servers.
#: Also those that run a query given as text, out of the scan's sight (query_to_xml...,
#: ts_stat).  Quoted names count too (``"pg_terminate_backend"(...)``).
_REFUSED_FUNCTIONS = re.compile(r"(?i)(pg_|lo_|dblink|query_to_xml|ts_stat$|set_config$|"
                                r"setval$|current_setting$)")
#: Object kinds a plugin may create, change and drop (CREATE FUNCTION, TRIGGER,
#: EXTENSION, ROLE, SCHEMA... are refused: code that runs as someone else).  No VIEW:
#: on PostgreSQL a simple view is written through to the table it reads, so a
#: plugin's view of another's table would be a way into it.
_KINDS = frozenset({"TABLE", "INDEX", "SEQUENCE"})
#: Words that tie a plugin's table to another's: its rows then show in the other's
#: reads (INHERITS, INHERIT), or the other table moves under it (ATTACH, DETACH).
_TIES = frozenset({"INHERITS", "INHERIT", "ATTACH", "DETACH"})


class Refused(Exception):
    """A statement the guard refused (its reason is the message)."""


def check_owned(guard: Any, sql: str) -> None:
    """Refuse ``sql`` unless every object it creates, changes, writes or drops is
    ``guard``'s (:meth:`chatd.store.TableGuard.owns`): a keyword scan of each
    statement, since PostgreSQL has no authorizer to ask.  What it cannot classify
    is refused.  Sets ``guard.refused`` and raises :class:`psycopg.ProgrammingError`."""
    try:
        for statement in _split(sql):
            _check_statement(guard, statement)
    except Refused as refused:
        guard.refused = f"plugin {guard.owner!r} may not {refused}"
        raise psycopg.ProgrammingError(guard.refused) from None


def _split(sql: str) -> list[list[tuple[str, str]]]:
    """The statements of ``sql`` as (kind, text) tokens, literals and comments out."""
    statements: list[list[tuple[str, str]]] = [[]]
    previous = ""
    for match in _SCAN.finditer(sql):
        kind, text = match.lastgroup or "other", match.group()
        if kind in ("space", "comment"):
            previous = ""
            continue
        if kind == "lit" and previous.upper() in ("E", "U", "B", "X", "N"):
            raise Refused("use E'', U&'', B'' or X'' strings (plain quoted strings only)")
        if (kind == "other" and text == "&" and previous.upper() == "U"
                and sql[match.end():match.end() + 1] in ("'", '"')):
            raise Refused("use U&'' strings or U&\"\" names (their escapes cannot be checked)")
        if kind == "other" and text in "$\\'\"`[":
            raise Refused(f"use {text!r} outside a quoted string (dollar quoting, unclosed "
                          "quotes and the like cannot be checked)")
        if kind == "other" and text == ";":
            statements.append([])
        else:
            statements[-1].append((kind, text))
        previous = text if kind == "word" else ""
    return [tokens for tokens in statements if tokens]


def _name(tokens: list[tuple[str, str]], i: int) -> tuple[str, int]:
    """The (unqualified) object name at ``tokens[i]``, and the index after it."""
    if i >= len(tokens) or tokens[i][0] not in ("word", "ident"):
        raise Refused("run a statement it cannot read (expected a name)")
    kind, text = tokens[i]
    if i + 1 < len(tokens) and tokens[i + 1][1] == ".":
        raise Refused(f"name a schema ({text}.): a plugin's tables are unqualified names")
    return (text[1:-1].replace('""', '"') if kind == "ident" else text), i + 1


def _words(tokens: list[tuple[str, str]], i: int, *options: str) -> int:
    """Skip the optional words ``options`` (in any order) from ``tokens[i]``."""
    while i < len(tokens) and tokens[i][0] == "word" and tokens[i][1].upper() in options:
        i += 1
    return i


def _mine(guard: Any, name: str) -> None:
    if not guard.owns(name):
        raise Refused(f"touch {name!r}: a plugin's tables are named {guard.prefix} or "
                      f"{guard.prefix}_*, and it changes no others")


def _check_statement(guard: Any, tokens: list[tuple[str, str]]) -> None:
    words = [text.upper() if kind == "word" else "" for kind, text in tokens]
    first = words[0]
    _check_everywhere(guard, tokens, words)
    if first in _READS or first in _WRITES:
        return  # the targets of INSERT/UPDATE/DELETE/MERGE/INTO were checked everywhere
    if first == "CREATE":
        _check_create(guard, tokens, words)
    elif first == "ALTER":
        _check_alter(guard, tokens, words)
    elif first == "DROP":
        _check_drop(guard, tokens, words)
    elif first == "TRUNCATE":
        i = _words(tokens, 1, "TABLE", "ONLY")
        while True:
            name, i = _name(tokens, i)
            _mine(guard, name)
            if i < len(tokens) and tokens[i][1] == "*":
                i += 1
            if i < len(tokens) and tokens[i][1] == ",":
                i = _words(tokens, i + 1, "ONLY")
                continue
            break
    else:
        raise Refused(f"run {tokens[0][1]!r} statements (only SELECT, INSERT, UPDATE, "
                      "DELETE, MERGE, TRUNCATE and CREATE/ALTER/DROP of tables, indexes "
                      "and sequences)")


def _check_everywhere(guard: Any, tokens: list[tuple[str, str]], words: list[str]) -> None:
    """What any statement may hide: a write in a WITH, SELECT ... INTO a new table,
    a foreign key onto another's table, CASCADE, functions of the server's."""
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        if word == "INTO":  # INSERT INTO, MERGE INTO, SELECT ... INTO a new table
            j = _words(tokens, i + 1, "TEMP", "TEMPORARY", "UNLOGGED", "TABLE")
            if any(w in ("TEMP", "TEMPORARY") for w in words[i + 1:j]):
                raise Refused("create temporary tables")
            _mine(guard, _name(tokens, j)[0])
        elif word in _TIES:
            raise Refused(f"use {tokens[i][1]} (it ties a table to another's)")
        elif word == "OF" and before == "PARTITION":
            _mine(guard, _name(tokens, i + 1)[0])
        elif word == "DELETE" and before not in ("ON", "THEN"):  # ON DELETE: a foreign key
            if i + 1 >= len(words) or words[i + 1] != "FROM":
                raise Refused("run a DELETE it cannot read")
            _mine(guard, _name(tokens, _words(tokens, i + 2, "ONLY"))[0])
        elif word == "UPDATE" and before not in ("FOR", "DO", "ON", "KEY", "THEN"):
            _mine(guard, _name(tokens, _words(tokens, i + 1, "ONLY"))[0])
        elif word == "REFERENCES":
            name, _ = _name(tokens, i + 1)
            _mine(guard, name)
        elif word == "CASCADE":
            raise Refused("use CASCADE (it reaches other tables)")
        elif (tokens[i][0] in ("word", "ident") and i + 1 < len(tokens)
              and tokens[i + 1][1] == "(" and _REFUSED_FUNCTIONS.match(tokens[i][1].strip('"'))):
            raise Refused(f"call {tokens[i][1]}()")


def _check_create(guard: Any, tokens: list[tuple[str, str]], words: list[str]) -> None:
    i = _words(tokens, 1, "OR", "REPLACE", "UNIQUE", "UNLOGGED")
    if i < len(words) and words[i] in ("TEMP", "TEMPORARY"):
        raise Refused("create temporary tables")
    kind = words[i] if i < len(words) else ""
    if kind not in _KINDS:
        raise Refused(f"create a {tokens[i][1] if i < len(tokens) else 'nothing'} "
                      "(only tables, indexes and sequences)")
    i = _words(tokens, i + 1, "CONCURRENTLY", "IF", "NOT", "EXISTS")
    if kind == "INDEX":
        if i < len(words) and words[i] != "ON":
            name, i = _name(tokens, i)
            _mine(guard, name)
        if i >= len(words) or words[i] != "ON":
            raise Refused("run a CREATE INDEX it cannot read")
        table, _ = _name(tokens, _words(tokens, i + 1, "ONLY"))
        _mine(guard, table)
        return
    name, _ = _name(tokens, i)
    _mine(guard, name)


def _check_alter(guard: Any, tokens: list[tuple[str, str]], words: list[str]) -> None:
    kind = words[1] if len(words) > 1 else ""
    if kind not in _KINDS:
        raise Refused(f"alter a {tokens[1][1] if len(tokens) > 1 else 'nothing'}")
    name, i = _name(tokens, _words(tokens, 2, "IF", "EXISTS", "ONLY"))
    _mine(guard, name)
    for j in range(i, len(words)):
        if words[j] in ("OWNER", "SCHEMA", "TABLESPACE", "TRIGGER", "POLICY", "SECURITY"):
            raise Refused(f"alter a table's {tokens[j][1]}")
        if words[j] == "TO" and words[j - 1] == "RENAME":
            new, _ = _name(tokens, j + 1)
            _mine(guard, new)


def _check_drop(guard: Any, tokens: list[tuple[str, str]], words: list[str]) -> None:
    kind = words[1] if len(words) > 1 else ""
    if kind not in _KINDS:
        raise Refused(f"drop a {tokens[1][1] if len(tokens) > 1 else 'nothing'}")
    i = _words(tokens, 2, "CONCURRENTLY", "IF", "EXISTS")
    while True:
        name, i = _name(tokens, i)
        _mine(guard, name)
        if i < len(tokens) and tokens[i][1] == ",":
            i += 1
            continue
        break
