"""What one history row costs the SQLite writer thread: the store's way, and the ways
it replaced, on history's own schema.

The store's writer shares the server's core on a small machine (and its process is
pinned to one core in ``bench/run.py``), so every microsecond it spends per row is one
the event loop does not get.  History queues a row per line said, with columns that are
NULL for most lines (node, host, account, notice), and the writer puts each batch in as
multi-row INSERTs.  A batch holds what gathered in ``storage.batch_seconds``, so its
size follows the traffic: here each batch has a random size (seeded) between half and
one and a half times ``--rows``, each in its own transaction, in memory (the disk is
not what is measured).  Compared, per row:

* ``store``: ``SqliteDialect.insert_rows`` as shipped (chunks of powers of two, each
  statement compiled once; a column NULL in every row written as a literal ``NULL``,
  one text every row shares bound once);
* ``per-count``: one multi-row INSERT made for the batch's own count, every value
  bound (the store before: a statement compiled for nearly every batch);
* ``executemany``: one single-row INSERT per row through ``executemany``.

    python3 bench/sqlite_rows.py --rows 100 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import time
from collections.abc import Callable
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


def fresh() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for step in SCHEMA:
        script = step["sqlite"] if isinstance(step, dict) else step
        if isinstance(script, str):
            conn.executescript(script)
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


def per_row_us(way: str, count: int, total: int) -> float:
    """Microseconds of the writer's CPU per row, over about ``total`` rows."""
    conn = fresh()
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
    return (time.process_time() - started) / written * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--total", type=int, default=200_000, help="rows per measurement")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"SQLite {sqlite3.sqlite_version}, in memory; us of CPU per row, median of "
          f"{args.repeat}")
    print(f"{'rows/batch':>10}  " + "  ".join(f"{w:>11}" for w in WAYS))
    for count in args.rows:
        figures = {w: statistics.median(per_row_us(w, count, args.total)
                                        for _ in range(args.repeat)) for w in WAYS}
        print(f"{count:>10}  " + "  ".join(f"{figures[w]:>11.2f}" for w in WAYS))


if __name__ == "__main__":
    main()
