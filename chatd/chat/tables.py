"""``server.store`` as one plugin sees it: the shared database, its own tables only.

Every plugin writes to the same database (an SQLite file, or PostgreSQL), so one
plugin's mistake could land in another's tables: a ``CREATE TABLE IF NOT EXISTS
history`` adopting the built-in history's table, a ``DELETE FROM accounts``.  A
plugin that is not one of chatd's built-ins therefore gets a :class:`PluginStore`:
the same store, except that

* ``migrate`` runs only under the plugin's own name as owner, and its steps may
  create, change and drop only tables named after the plugin (``dice`` or
  ``dice_*``, :class:`chatd.store.TableGuard`: SQLite's authorizer, or on
  PostgreSQL a keyword scan of each statement), never a built-in one
  (:data:`BUILT_IN_TABLES`: a plugin ``room`` does not own ``room_bans``);
* each ``write`` (and ``insert``) runs under the same guard on the writer thread,
  and one that fails (a bad statement, a refused table, an exception in a
  callable write) is reported on the loop as a failure *of that plugin*: logged
  with its name and counted by its circuit breaker, as an exception in its hook
  would be.  The store itself drops the write and goes on.

Reads are not restricted (a statistics plugin may read the history).  Built-ins
are the server: they get the store itself.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ..store import Store, TableGuard, is_store_trouble

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: The tables and indexes of chatd's built-in plugins (their ``SCHEMA``s): never a
#: plugin's, even one whose name they start with (``room``, ``accounts_by``).
#: tests/test_plugin_author.py checks that every one the built-ins create is here.
BUILT_IN_TABLES = frozenset({
    "accounts", "accounts_by_look",  # accounts
    "history", "history_by_room",  # history
    "rooms", "room_operators", "room_bans",  # moderation
})

#: ``report(plugin, what, exception)``: called on the loop for a write that failed.
Reporter = Callable[[str, str, BaseException], None]


class PluginStore:
    """The store for one plugin (see the module docstring); everything not overridden
    here is the store's own (``read``, ``flush``, the counters)."""

    __slots__ = ("_guard", "_plugin", "_post", "_report", "_store")

    def __init__(self, store: Store, plugin: str, post: Callable[..., None],
                 report: Reporter) -> None:
        self._store = store
        self._plugin = plugin
        self._guard = TableGuard(plugin, BUILT_IN_TABLES)
        self._post = post  # hands a call to the loop, from the writer thread
        self._report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def migrate(self, owner: str, steps: Sequence[Any], timeout: float = 10.0) -> None:
        """The store's ``migrate``, for this plugin's own tables only."""
        if owner != self._plugin:
            raise RuntimeError(
                f"store: plugin {self._plugin!r} may migrate only its own tables: "
                f"migrate({self._plugin!r}, ...), not {owner!r}"
            )
        self._store.migrate(owner, steps, timeout, guard=TableGuard(owner, BUILT_IN_TABLES))

    def write(self, sql: str | Callable[[sqlite3.Connection], None],
              params: Sequence[Any] = ()) -> int:
        """The store's ``write``, guarded and attributed to this plugin."""
        return self._store.write(self._attributed(sql, params))

    def insert(self, table: str, columns: tuple[str, ...], values: Sequence[Any]) -> int:
        """The store's ``insert`` (one row), guarded and attributed to this plugin."""
        names = (table, *columns)
        if not all(isinstance(n, str) and _IDENTIFIER.fullmatch(n) for n in names):
            raise ValueError(f"not plain SQL names: {names!r}")
        if len(values) != len(columns):
            raise ValueError(f"{len(columns)} columns, {len(values)} values")
        marks = ", ".join("?" * len(columns))
        return self.write(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                          tuple(values))

    def _attributed(self, sql: str | Callable[[sqlite3.Connection], None],
                    params: Sequence[Any]) -> Callable[[sqlite3.Connection], None]:
        """``sql`` as a callable write: run under the guard; a failure is reported once
        to the plugin host (a batch that fails is retried write by write: it counts
        once toward the plugin's breaker) and raised on, for the store to drop, count
        and log with its cause."""
        guard, plugin = self._guard, self._plugin
        reported = False

        def write(conn: sqlite3.Connection) -> None:
            nonlocal reported
            guard.refused = None
            conn.set_authorizer(guard)
            try:
                if callable(sql):
                    sql(conn)
                else:
                    conn.execute(sql, params)
            except Exception as exc:
                if is_store_trouble(exc):
                    raise  # the disk's fault, not the plugin's: the store retries
                why = guard.refused  # set by the guard (SQLite's authorizer, or the scan)
                guard.refused = None
                if not reported:
                    reported = True
                    self._post(self._report, plugin, "store write",
                               sqlite3.ProgrammingError(why) if why else exc)
                if why and isinstance(exc, sqlite3.Error):
                    # say what the guard refused, not SQLite's bare "not authorized"
                    raise sqlite3.ProgrammingError(why) from exc
                raise  # the store drops it, counts it and logs it with its cause
            finally:
                conn.set_authorizer(None)

        write.__qualname__ = f"{plugin}'s write {str(sql)[:60]!r}"
        return write
