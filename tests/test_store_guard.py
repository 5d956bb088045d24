"""The table guard on both backends: a plugin's migration steps and writes touch only
its own tables (``owner`` or ``owner_*``), never a built-in's or the store's.  On
SQLite an authorizer answers for each action; on PostgreSQL, which has none, a
keyword scan of each statement (chatd/store_postgres.py ``check_owned``): what it
cannot classify is refused."""

from __future__ import annotations

import pytest

from chatd.chat.tables import PluginStore
from chatd.store import Store

#: The built-in tables a plugin must not reach, as they exist on each backend.
BUILT_INS = [
    "CREATE TABLE accounts (nick TEXT PRIMARY KEY, secret TEXT)",
    "CREATE TABLE room_bans (room TEXT, mask TEXT)",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "postgresql":
        made = Store(None, url=request.getfixturevalue("postgres_url"))
    else:
        made = Store(tmp_path / "db.sqlite3")
    yield from _with_built_ins(made)


@pytest.fixture
def pg_store(postgres_url):
    yield from _with_built_ins(Store(None, url=postgres_url))


def _with_built_ins(made: Store):
    made.open()
    made.migrate("builtin", BUILT_INS)
    made.write("INSERT INTO accounts (nick, secret) VALUES ('alice', 'hash')")
    made.write("INSERT INTO room_bans (room, mask) VALUES ('#dev', 'x!*@*')")
    assert made.flush(10)
    yield made
    made.close()


def _plugin(store: Store, name: str = "dice") -> tuple[PluginStore, list[str]]:
    failures: list[str] = []
    view = PluginStore(store, name, post=lambda fn, *args: fn(*args),
                       report=lambda plugin, what, exc: failures.append(str(exc)))
    return view, failures


def _untouched(store: Store) -> None:
    assert store.read("SELECT nick, secret FROM accounts") == [("alice", "hash")]
    assert store.read("SELECT room, mask FROM room_bans") == [("#dev", "x!*@*")]


def test_a_plugin_migrates_writes_and_reads_its_own_tables(store):
    dice, failures = _plugin(store)
    dice.migrate("dice", ["CREATE TABLE dice_rolls (who TEXT, n INTEGER);\n"
                          "CREATE INDEX dice_rolls_by_who ON dice_rolls (who);",
                          "ALTER TABLE dice_rolls ADD COLUMN note TEXT"])
    dice.write("INSERT INTO dice_rolls (who, n) VALUES (?, ?)", ("alice", 6))
    dice.insert("dice_rolls", ("who", "n"), ("bob", 2))
    dice.write("UPDATE dice_rolls SET n = n + 1 WHERE who = ?", ("bob",))
    dice.write("INSERT INTO dice_rolls (who, n) SELECT nick, 0 FROM accounts")  # reads: free
    dice.write("DELETE FROM dice_rolls WHERE who = ?", ("alice",))
    assert store.flush(10)
    assert failures == []
    assert store.read("SELECT who, n FROM dice_rolls") == [("bob", 3)]


@pytest.mark.parametrize("step", [
    "CREATE TABLE IF NOT EXISTS accounts (nick TEXT)",
    "DROP TABLE room_bans",
    "ALTER TABLE accounts ADD COLUMN x TEXT",
    "CREATE INDEX dice_sneaky ON accounts (secret)",
    "CREATE TABLE dice_t (x TEXT);\nDELETE FROM accounts",
])
def test_a_migration_step_on_anothers_table_is_refused_with_the_plugins_name(store, step):
    dice, _ = _plugin(store)
    with pytest.raises(RuntimeError, match="plugin 'dice' may not"):
        dice.migrate("dice", [step])
    _untouched(store)
    assert store.read("SELECT count(*) FROM chatd_schema WHERE owner = 'dice'") == [(0,)]


@pytest.mark.parametrize("statement", [
    "DELETE FROM accounts",
    "UPDATE accounts SET secret = 'mine'",
    "INSERT INTO room_bans (room, mask) VALUES ('#dev', '*')",
    "DELETE FROM chatd_schema",
    "DROP TABLE accounts",
])
def test_a_write_to_anothers_table_is_the_plugins_failure_and_changes_nothing(store,
                                                                              statement):
    dice, failures = _plugin(store)
    dice.write(statement)
    assert store.flush(10)
    assert len(failures) == 1 and "plugin 'dice' may not" in failures[0], failures
    _untouched(store)
    assert store.rejected_by == {"?": 1}


@pytest.mark.parametrize("statement", [
    'DELETE FROM "accounts"',  # a quoted name is the same table
    "DELETE FROM public.accounts",  # a schema-qualified one too
    "SELECT 1; DELETE FROM accounts",  # a second statement
    "TRUNCATE dice_t, accounts",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "DO $$ BEGIN DELETE FROM accounts; END $$",
    "INSERT INTO dice_t VALUES (E'\\''); DELETE FROM accounts; --')",
    "CREATE FUNCTION dice_f() RETURNS int AS 'DELETE FROM accounts; SELECT 1' LANGUAGE sql",
    "SELECT * INTO accounts_copy FROM accounts",
    "CREATE TABLE dice_ref (nick TEXT REFERENCES accounts (nick))",
    "COPY accounts FROM STDIN",
    "GRANT ALL ON accounts TO PUBLIC",
    "SET session_replication_role = replica",
    "WITH gone AS (DELETE FROM accounts RETURNING nick) SELECT count(*) FROM gone",
    "ALTER TABLE dice_t RENAME TO accounts_old",
])
def test_what_the_postgresql_scan_cannot_allow_is_refused(pg_store, statement):
    """What only the keyword scan must see through (SQLite asks its authorizer)."""
    store = pg_store
    dice, failures = _plugin(store)
    dice.migrate("dice", ["CREATE TABLE dice_t (x TEXT)"])
    dice.write(statement)
    assert store.flush(10)
    assert len(failures) == 1 and "plugin 'dice' may not" in failures[0], failures
    _untouched(store)


def test_a_plugin_named_like_a_built_in_tables_prefix_does_not_own_it(store):
    room, failures = _plugin(store, "room")
    room.migrate("room", ["CREATE TABLE room_notes (t TEXT)"])
    room.write("INSERT INTO room_notes (t) VALUES ('mine')")
    room.write("DELETE FROM room_bans")
    assert store.flush(10)
    assert len(failures) == 1 and "'room_bans'" in failures[0]
    assert store.read("SELECT t FROM room_notes") == [("mine",)]
    _untouched(store)
