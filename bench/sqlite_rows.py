"""What one history row costs the SQLite writer thread: the store's way, and the ways
it replaced, on history's own schema.

The store's writer shares the server's core on a small machine (and its process is
pinned to one core in ``bench/run.py``), so every microsecond it spends per row is one
the event loop does not get.  History queues a row per line said, with columns that are
NULL for most lines (node, host, account, notice), and the writer puts each batch in as
multi-row INSERTs.  A batch holds what gathered in ``storage.batch_seconds``, so its
size follows the traffic: here each batch has a random size (seeded) between half and
one and a half times ``--rows``, each in its own transaction, in memory (the disk is
not what is measured) unless ``--disk`` puts the table in a file the way the store
opens one (WAL, ``synchronous=NORMAL``: each commit appends its pages to the log, and
SQLite copies them to the file every 1,000 pages).  ``--drop-index`` leaves out
history's ``(room, seq)`` index, to show what it costs a row.  Compared, per row:

* ``store``: ``SqliteDialect.insert_rows`` as shipped (chunks of powers of two, each
  statement compiled once; a column NULL in every row written as a literal ``NULL``,
  one text every row shares bound once);
* ``per-count``: one multi-row INSERT made for the batch's own count, every value
  bound (the store before: a statement compiled for nearly every batch);
* ``executemany``: one single-row INSERT per row through ``executemany``.

    python3 bench/sqlite_rows.py --rows 100 1000 --repeat 5
    python3 bench/sqlite_rows.py --rows 80 320 --disk             # as a server writes them
    python3 bench/sqlite_rows.py --rows 80 320 --disk --drop-index
"""

from __future__ import annotations

import argparse
import itertools
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatd.builtin.history import _COLUMNS, SCHEMA
from chatd.store_sqlite import SqliteDialect

PREFIX = f"INSERT INTO history ({', '.join(_COLUMNS)}) VALUES "


def history_rows(count: int) -> list[tuple[Any, ...]]:
    """Rows as history queues them for a guest chatting on one node (no node id, no
    account, not a notice; the host a cloak): room, time, kind, nick, target, text,
    event id, node, ident, host, account, notice."""
    now = time.time()
    return [("#lobby", now + i, "message", f"guest-{i % 100}", "#lobby", "x" * 64,
             1_765_000_000_000_000 + i, None, "u", "c0ffee12.cloak", None, None)
            for i in range(count)]


_FILES = itertools.count()


def fresh(folder: Path | None, drop_index: bool) -> sqlite3.Connection:
    """History's table, in memory or (``folder``) in a new file in WAL mode."""
    if folder is None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
    else:
        conn = sqlite3.connect(folder / f"history-{next(_FILES)}.sqlite3",
                               isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    for step in SCHEMA:
        script = step["sqlite"] if isinstance(step, dict) else step
        if isinstance(script, str):
            conn.executescript(script)
    if drop_index:
        conn.execute("DROP INDEX history_by_room")
    return conn


#: The store's dialect (made once: an in-memory one keeps a connection of its own).
DIALECT = SqliteDialect(None, "NORMAL")


def store(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    DIALECT.insert_rows(conn, PREFIX, rows)


def per_count(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    conn.execute(PREFIX + ", ".join([one] * len(rows)), [v for row in rows for v in row])


def executemany(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(PREFIX + "(" + ", ".join("?" * len(rows[0])) + ")", rows)


WAYS: dict[str, Callable[[sqlite3.Connection, list[tuple[Any, ...]]], None]] = {
    "store": store, "per-count": per_count, "executemany": executemany}


def per_row_us(way: str, count: int, total: int, folder: Path | None = None,
               drop_index: bool = False) -> float:
    """Microseconds of the writer's CPU per row, over about ``total`` rows."""
    conn = fresh(folder, drop_index)
    rows = history_rows(count + count // 2)
    insert = WAYS[way]
    sizes = random.Random(count)
    written = 0
    started = time.process_time()
    while written < total:
        size = sizes.randint(max(1, count // 2), count + count // 2)
        conn.execute("BEGIN")
        insert(conn, rows[:size])
        conn.execute("COMMIT")
        written += size
    spent = time.process_time() - started
    conn.close()
    return spent / written * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--total", type=int, default=200_000, help="rows per measurement")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--disk", action="store_true",
                        help="a file in WAL mode (in a temporary folder), not memory")
    parser.add_argument("--drop-index", action="store_true",
                        help="without history's (room, seq) index")
    args = parser.parse_args()
    where = "a WAL file" if args.disk else "in memory"
    print(f"SQLite {sqlite3.sqlite_version}, {where}"
          f"{', no room index' if args.drop_index else ''}; us of CPU per row, median of "
          f"{args.repeat}")
    print(f"{'rows/batch':>10}  " + "  ".join(f"{w:>11}" for w in WAYS))
    with tempfile.TemporaryDirectory(prefix="sqlite-rows-") as scratch:
        folder = Path(scratch) if args.disk else None
        for count in args.rows:
            figures = {w: statistics.median(
                per_row_us(w, count, args.total, folder, args.drop_index)
                for _ in range(args.repeat)) for w in WAYS}
            print(f"{count:>10}  " + "  ".join(f"{figures[w]:>11.2f}" for w in WAYS))


if __name__ == "__main__":
    main()
