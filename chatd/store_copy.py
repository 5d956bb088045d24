"""``chatd --config FILE --copy-store-to URL``: move an SQLite store into PostgreSQL.

An operator who outgrows one process copies the SQLite file the config names
(``storage.path``) into an EMPTY PostgreSQL database once, then points the config
at it (``storage.url``).  The copy is built from what chatd itself knows, so it
needs no schema written by hand and follows every plugin, built-in or not:

1. **The source, as one snapshot.**  The file is opened read-only and read in one
   transaction (WAL: a chatd still writing it does not disturb the read, and
   the copy is exactly what was committed when it began).  A chatd that has
   the file open leaves its ``-wal`` file beside it: then the copy warns that
   what is written after it began stays behind (it does not refuse: a copy
   taken for a dry run while the chat goes on is legitimate; for the real move,
   stop chatd first).
2. **The plugins' own migrations.**  The config's server is built as
   ``--check-config`` builds it (:func:`chatd.server.dry_run`: every plugin's
   ``chatd_startup``, against a database in memory), which records each
   owner's migration steps (:attr:`chatd.store.Store.migrations`).  The target
   is brought to *the source's* version of each owner with those steps, on the
   target's dialect, through the store's own ``migrate`` (its locking and
   guards): a source written by an older chatd gets its later steps when chatd
   first starts on the URL, exactly as it would have on the file.  Refused,
   before the target is touched: an owner in the source that this config does
   not load (its tables could not be made), a source at a version newer than
   the code knows, a table no migration makes.
3. **An empty target only.**  A target where any table (but the store's own
   bookkeeping) holds a row is refused with the tables named: a second copy
   into the same database never merges two histories.
4. **One transaction for the rows.**  Every table of every owner, every column
   (matched by name, case-insensitively: PostgreSQL folds unquoted names), in
   multi-row ``INSERT``s of at most 1000 rows, then the row count of each table
   compared with the source's inside the same transaction, and every identity
   or serial column's sequence moved past the largest copied value (asked of
   PostgreSQL's catalogue, not hard-coded: history's ``seq`` and any plugin's
   own).  Any failure rolls the whole copy back: the target is left with its
   empty tables, and the copy can be run again.

It runs on the store's writer (a write function, so the connection is the
store's, with ``?`` placeholders on both dialects) and prints what it did.  The
URL is shown redacted everywhere (``postgresql://user:***@host/db``); the
password may also come from ``PGPASSWORD`` or ``PGPASSFILE`` and stay out of
the command line.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .config import Config
from .config_rules import redact_url
from .store import Step, Store, TableGuard, is_store_trouble
from .templates import plural

__all__ = ["CopyRefused", "copy_store", "read_source"]

#: Rows per INSERT statement (fewer for wide tables: PostgreSQL takes at most 65,535
#: parameters per statement, SQLite 32,766).
ROWS_PER_INSERT = 1000
_MAX_PARAMS = 32000
#: The store's own tables: made by the store on each database, never copied.
STORE_TABLES = frozenset({"chatd_schema", "chatd_batches"})
#: How long the target may fail (unreachable, restarting) before the copy gives up.
TARGET_PATIENCE_SECONDS = 30.0


class CopyRefused(Exception):
    """The copy cannot (or must not) be done; the message says why, in one line."""


@dataclass
class Source:
    """The SQLite file, open in one read transaction: its owners' versions and tables."""

    path: Path
    conn: sqlite3.Connection
    #: Owner -> version, from ``chatd_schema``.
    versions: dict[str, int]
    #: Table -> its columns, in the file's order.
    tables: dict[str, list[str]]
    #: Table -> rows in the snapshot.
    counts: dict[str, int] = field(default_factory=dict)
    #: Why the file looks in use by a chatd (empty: it does not).
    in_use: str = ""

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


def read_source(path: Path | None) -> Source:
    """Open ``path`` read-only in one transaction (the snapshot every later read sees)."""
    if path is None:
        raise CopyRefused("the config sets no storage.path: there is no SQLite file to copy")
    if not path.is_file():
        raise CopyRefused(f"storage.path: {path} does not exist: there is nothing to copy")
    in_use = _in_use(path)  # first: opening the file makes a -wal file beside it
    conn = _open_read_only(path)
    try:
        conn.execute("BEGIN")  # one snapshot from the first read to the last
        versions = dict(conn.execute("SELECT owner, version FROM chatd_schema").fetchall())
        names = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite%' ORDER BY name")]
        tables = {name: [row[1] for row in conn.execute(f"PRAGMA table_info({_quote(name)})")]
                  for name in names if name.lower() not in STORE_TABLES}
        counts = {name: conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
                  for name in tables}
    except sqlite3.Error as exc:
        conn.close()
        raise CopyRefused(f"{path} is not a chatd database ({exc})") from None
    return Source(path, conn, versions, tables, counts, in_use)


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that writes nothing (``query_only``).  Opened read-write where it can
    be: SQLite then removes the ``-wal`` and ``-shm`` files it makes when it closes,
    which a ``mode=ro`` connection cannot (they would stay, and look like a chatd
    holding the file); read-only for a file this user may only read."""
    uri = path.resolve().as_uri()
    for mode in ("rw", "ro"):
        try:
            conn = sqlite3.connect(f"{uri}?mode={mode}", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
            return conn
        except sqlite3.Error as exc:
            problem = exc
    raise CopyRefused(f"cannot open {path}: {problem}") from None


def _in_use(path: Path) -> str:
    """A chatd that has the file open keeps a ``-wal`` file beside it (SQLite removes it
    when the last connection closes cleanly)."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        return (f"{wal.name} exists: a chatd has the file open (or did not stop cleanly); "
                "the copy holds what was committed when it began, anything written later "
                "stays behind: stop chatd before the real move")
    return ""


def known_migrations(config: Config) -> dict[str, tuple[tuple[Step, ...], TableGuard | None]]:
    """Every owner's migration steps, as this config's plugins give them at startup (a
    dry run, as ``--check-config`` makes: nothing bound, the database in memory)."""
    from .server import StartupError, dry_run  # late: the server pulls in everything

    try:
        server = dry_run(config)
    except StartupError as exc:
        raise CopyRefused("; ".join(exc.problems)) from None
    try:
        return dict(server.store.migrations)
    finally:
        server.discard()


def check_versions(source: Source,
                   known: dict[str, tuple[tuple[Step, ...], TableGuard | None]]) -> None:
    """Every owner in the source is one this code can make tables for, at that version."""
    for owner, version in sorted(source.versions.items()):
        if owner not in known:
            raise CopyRefused(
                f"the source holds tables of {owner!r} (version {version}), which this config "
                f"does not load: load that plugin in the config, then copy again")
        steps = len(known[owner][0])
        if version > steps:
            raise CopyRefused(
                f"the source's {owner!r} tables are at version {version}, newer than the "
                f"{steps} this chatd knows: copy with the chatd that wrote them")


def copy_store(config: Config, target: Store, *, shown: str, out: TextIO,
               patience: float = TARGET_PATIENCE_SECONDS) -> int:
    """Copy the config's SQLite file into ``target`` (an opened, empty store); returns the
    rows copied.  ``shown``: the target as the operator may see it (redacted).  Raises
    CopyRefused with the reason; the target is left as it was, or with empty tables."""
    source = read_source(config.storage_path())
    try:
        say = _printer(out)
        say(f"copying {source.path} into {shown}")
        if source.in_use:
            say(f"warning: {source.in_use}")
        known = known_migrations(config)
        check_versions(source, known)
        writer = _Writer(target, patience)
        dialect = target.dialect
        busy = writer.run(lambda conn: _filled_tables(conn, dialect),
                          "checking the target is empty", first=True)
        if busy:
            listed = ", ".join(f"{name} ({plural(rows, 'row')})" for name, rows in busy)
            raise CopyRefused(f"the database is not empty: {listed}; copy only into an empty "
                              "database (drop and create it again to start over)")
        _migrate(target, source, known, say)
        layout = writer.run(lambda conn: _target_layout(conn, dialect),
                            "reading the target's tables")
        plan = _plan(source, layout)
        copied = writer.run(lambda conn: _copy_rows(conn, source, plan, dialect),
                            "copying the rows")
        for item in plan:
            say(f"{item.source}: {plural(source.counts[item.source], 'row')}")
        for table, column, last in copied:
            say(f"{table}.{column}: the sequence continues after {last}")
        total = sum(source.counts.values())
        say(f"copied {plural(total, 'row')} in {plural(len(plan), 'table')}, every count "
            f"checked; now set storage.url to {shown} (and remove storage.path) in the config")
        return total
    finally:
        source.close()


def _printer(out: TextIO) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(f"chatd: {line}", file=out, flush=True)
    return say


def _migrate(target: Store, source: Source,
             known: dict[str, tuple[tuple[Step, ...], TableGuard | None]],
             say: Callable[[str], None]) -> None:
    """Bring each owner's tables on the target to the source's version, with its own steps."""
    for owner, version in sorted(source.versions.items()):
        steps, guard = known[owner]
        try:
            target.migrate(owner, steps[:version], timeout=TARGET_PATIENCE_SECONDS, guard=guard)
        except RuntimeError as exc:
            raise CopyRefused(str(exc)) from None
    if source.versions:
        say("schema: " + ", ".join(f"{owner} at version {version}"
                                   for owner, version in sorted(source.versions.items())))


@dataclass
class _TablePlan:
    """One table's copy: its name on each side, the columns on each side (paired)."""

    source: str
    target: str
    source_columns: list[str]
    target_columns: list[str]
    identities: list[str]


def _plan(source: Source, layout: _Layout) -> list[_TablePlan]:
    """Pair each source table and column with the target's (names folded to lowercase)."""
    plan = []
    for name, columns in source.tables.items():
        target_name = layout.tables.get(name.lower())
        if target_name is None:
            raise CopyRefused(
                f"the source's table {name!r} is made by none of the migrations this config "
                "runs: was it made by hand, or by a plugin no longer loaded?")
        target_columns = layout.columns[target_name]
        missing = [c for c in columns if c.lower() not in target_columns]
        if missing:
            raise CopyRefused(f"the target's {target_name} has no column {', '.join(missing)} "
                              "after the same migrations: was the file changed by hand?")
        plan.append(_TablePlan(name, target_name, columns,
                               [target_columns[c.lower()] for c in columns],
                               layout.identities.get(target_name, [])))
    return plan


@dataclass
class _Layout:
    """The target's tables: lowercase name -> name; name -> {lowercase column -> column};
    name -> its identity or serial columns (PostgreSQL)."""

    tables: dict[str, str]
    columns: dict[str, dict[str, str]]
    identities: dict[str, list[str]]


def _table_names(conn: Any, dialect: str) -> list[str]:
    """The target's tables (not the store's bookkeeping)."""
    if dialect == "postgresql":
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'").fetchall()
    else:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                            "AND name NOT LIKE 'sqlite%'").fetchall()
    return sorted(row[0] for row in rows if row[0].lower() not in STORE_TABLES)


def _filled_tables(conn: Any, dialect: str) -> list[tuple[str, int]]:
    """(On the writer.)  The target's tables that hold rows, with their counts."""
    filled = []
    for name in _table_names(conn, dialect):
        rows = conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
        if rows:
            filled.append((name, rows))
    return filled


def _target_layout(conn: Any, dialect: str) -> _Layout:
    """(On the writer.)  The target's tables, columns and identity columns."""
    names = _table_names(conn, dialect)
    columns: dict[str, dict[str, str]] = {}
    identities: dict[str, list[str]] = {}
    for name in names:
        if dialect == "postgresql":
            rows = conn.execute(
                "SELECT column_name, is_identity, column_default "
                "FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ?", (name,)).fetchall()
            identities[name] = [column for column, identity, default in rows
                                if identity == "YES" or str(default or "").startswith("nextval(")]
        else:
            rows = conn.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
            rows = [(row[1],) for row in rows]
        columns[name] = {row[0].lower(): row[0] for row in rows}
    return _Layout({name.lower(): name for name in names}, columns, identities)


def _copy_rows(conn: Any, source: Source, plan: list[_TablePlan],
               dialect: str) -> list[tuple[str, str, int]]:
    """(On the writer, in one transaction.)  Every row of every table, each table's count
    checked, the sequences moved on; returns (table, column, last value) per sequence.
    Raises CopyRefused (the transaction is rolled back) if a count differs."""
    moved = []
    for item in plan:
        # The same migrations ran on both: rows a step inserted are in the source too.
        conn.execute(f"DELETE FROM {_quote(item.target)}")
        try:
            _copy_table(conn, source, item)
        except Exception as exc:
            if is_store_trouble(exc):
                raise  # the connection's, not the rows': the writer retries the copy
            said = " ".join(str(exc).split())  # one line (psycopg's may add a CONTEXT)
            raise CopyRefused(f"{item.target}: {type(exc).__name__}: {said}; nothing was "
                              "copied") from exc
        copied = conn.execute(f"SELECT count(*) FROM {_quote(item.target)}").fetchone()[0]
        if copied != source.counts[item.source]:
            raise CopyRefused(f"{item.target}: {copied} rows arrived of "
                              f"{source.counts[item.source]}; nothing was copied")
        if dialect == "postgresql":
            moved += _move_sequences(conn, item)
    return moved


def _copy_table(conn: Any, source: Source, item: _TablePlan) -> None:
    """One table, in multi-row INSERTs of at most ROWS_PER_INSERT rows."""
    width = len(item.source_columns)
    if not width:
        return
    per_insert = max(1, min(ROWS_PER_INSERT, _MAX_PARAMS // width))
    override = " OVERRIDING SYSTEM VALUE" if item.identities else ""
    prefix = (f"INSERT INTO {_quote(item.target)} "
              f"({', '.join(_quote(c) for c in item.target_columns)}){override} VALUES ")
    one = "(" + ", ".join("?" * width) + ")"
    cursor = source.conn.execute(
        f"SELECT {', '.join(_quote(c) for c in item.source_columns)} "
        f"FROM {_quote(item.source)}")
    while rows := cursor.fetchmany(per_insert):
        conn.execute(prefix + ", ".join([one] * len(rows)),
                     [value for row in rows for value in row])


def _move_sequences(conn: Any, item: _TablePlan) -> list[tuple[str, str, int]]:
    """(PostgreSQL.)  Each identity or serial column's sequence past its largest value,
    so the next row the database numbers follows the copied ones."""
    moved = []
    for column in item.identities:
        last = conn.execute(f"SELECT max({_quote(column)}) FROM {_quote(item.target)}"
                            ).fetchone()[0]
        if last is None:
            continue
        conn.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?)",
                     (_quote(item.target), column, last))
        moved.append((item.target, column, int(last)))
    return moved


class _Writer:
    """Runs a function on the target store's writer (in its transaction) and waits for it."""

    def __init__(self, store: Store, patience: float) -> None:
        self.store = store
        self.patience = patience

    def run(self, function: Callable[[Any], Any], what: str, *, first: bool = False) -> Any:
        """``function(conn)``'s result; CopyRefused if it raised or the target failed
        (at once on the ``first`` call, whose failure is the connection's: a wrong URL
        or password; later, after ``patience`` seconds of trouble)."""
        box: dict[str, Any] = {}

        def job(conn: Any) -> None:
            # A savepoint, so that what ``function`` did can be undone here, quietly
            # (the store would log a failing write function as a plugin's bug, with
            # its traceback); the database's own trouble goes on to the writer, which
            # rolls back and retries the whole function.
            box.clear()  # a retry starts afresh
            conn.execute("SAVEPOINT chatd_copy")
            try:
                box["result"] = function(conn)
            except Exception as exc:
                box["error"] = exc
                if is_store_trouble(exc):
                    raise
                conn.execute("ROLLBACK TO SAVEPOINT chatd_copy")

        store = self.store
        if not store.write(job):
            raise CopyRefused(f"{what}: the store's queue is full")
        troubled_since: float | None = None
        while not store.flush(0.2):
            if not store.problem:
                troubled_since = None
                continue
            now = time.monotonic()
            troubled_since = troubled_since or now
            if first or now - troubled_since > self.patience:
                raise CopyRefused(f"{what}: {store.problem}")
        if "error" in box:
            error = box["error"]
            raise CopyRefused(str(error) if isinstance(error, CopyRefused)
                              else f"{what}: {type(error).__name__}: {error}")
        if "result" not in box:  # the store dropped it (and logged why)
            raise CopyRefused(f"{what}: the store rejected the work; its log says why")
        return box["result"]


def _quote(name: str) -> str:
    """An SQL identifier, quoted (both dialects: double quotes, doubled inside)."""
    return '"' + name.replace('"', '""') + '"'


def run_copy(config: Config, url: str, *, out: TextIO | None = None,
             err: TextIO | None = None) -> int:
    """``chatd --copy-store-to URL``: 0 once copied, 2 (one line on ``err``) if refused."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    shown = redacted(url)
    try:
        target = open_target(config, url)
    except CopyRefused as exc:
        print(f"chatd: cannot copy: {exc}", file=err)
        return 2
    try:
        copy_store(config, target, shown=shown, out=out)
    except CopyRefused as exc:
        print(f"chatd: cannot copy into {shown}: {exc}", file=err)
        return 2
    finally:
        target.close(1.0)
    return 0


def redacted(url: str) -> str:
    """``url`` as the operator may see it: without its password."""
    return redact_url(url)


def open_target(config: Config, url: str) -> Store:
    """An opened store on the PostgreSQL database at ``url``, with the config's storage
    settings (its queue, its batches); CopyRefused for what is not such a URL."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("postgresql", "postgres"):
        raise CopyRefused(f"--copy-store-to takes a postgresql:// URL, not {redacted(url)!r}")
    storage = config.storage
    try:
        store = Store(None, url=url, owner=lambda: "--copy-store-to", batch_max=storage.batch_max,
                      queue_max=storage.queue_max, read_timeout=storage.read_timeout_seconds)
    except ImportError:
        raise CopyRefused("PostgreSQL needs psycopg: pip install 'chatd[postgres]'") from None
    except Exception as exc:  # a malformed URL: psycopg's words, without the URL
        raise CopyRefused(f"{redacted(url)} is not a usable URL ({type(exc).__name__})"
                          ) from None
    store.open()
    return store
