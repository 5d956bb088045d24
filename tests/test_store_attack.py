"""Attacks on the store on PostgreSQL (issue 22, part F): the ``?`` translation, the
plugin table guard's keyword scan, the password's redaction, change notices.  Each
case is what a careless or hostile plugin (or operator's typo) could send; the store
must answer it clearly and keep everyone else's data and writer intact."""

from __future__ import annotations

import pytest

from chatd.chat.tables import PluginStore
from chatd.store import Store, StoreUnavailable
from chatd.store_postgres import translate


@pytest.fixture
def pg(postgres_url):
    store = Store(None, url=postgres_url, read_timeout=5.0)
    store.open()
    store.migrate("builtin", ["CREATE TABLE accounts (nick TEXT PRIMARY KEY, secret TEXT)"])
    store.write("INSERT INTO accounts (nick, secret) VALUES ('alice', 'hash')")
    assert store.flush(10)
    yield store
    store.close()


# -- the ? -> %s translation, checked by the server itself --------------------------------

@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT $$it's ? 100%$$, ?", ("it's ? 100%", "x")),
    ("SELECT $q$a $$ ? b$q$, ?", ("a $$ ? b", "x")),
    ("SELECT E'it\\'s ?', ?", ("it's ?", "x")),
    ("SELECT e'back\\\\', ?", ("back\\", "x")),
    ("SELECT /* outer /* inner ? */ still ? */ 'c', ?", ("c", "x")),
    ("SELECT 'a''?''b', ?", ("a'?'b", "x")),
    ('SELECT 1 AS "what?%", ?', (1, "x")),
    ("SELECT U&'d\\0061t?', ?", ("dat?", "x")),
])
def test_a_question_mark_inside_quotes_or_comments_is_not_a_placeholder(pg, sql, expected):
    assert pg.read(sql, ("x",)) == [expected]


def test_a_comment_at_the_very_end_without_a_newline(pg):
    assert pg.read("SELECT ? -- the end ?", ("x",)) == [("x",)]


def test_a_dollar_inside_a_name_starts_no_quote(pg):
    pg.migrate("builtin2", ["CREATE TABLE t$x$ (v TEXT)"])
    pg.write("INSERT INTO t$x$ (v) VALUES (?)", ("?$x$",))
    assert pg.flush(10)
    assert pg.read("SELECT v FROM t$x$ WHERE v = ?", ("?$x$",)) == [("?$x$",)]


def test_two_question_marks_are_two_placeholders():
    """``??`` is two placeholders, as on SQLite (PostgreSQL's jsonb ``?`` operators are
    out of reach with ``?`` placeholders: docs/api.md says to use jsonb_exists())."""
    assert translate("SELECT ?? FROM t WHERE a = '??'") == "SELECT %s%s FROM t WHERE a = '??'"


def test_more_placeholders_than_values_rejects_that_write_only(pg):
    bad = pg.write("INSERT INTO accounts (nick, secret) VALUES (?, ?)", ("bob",))
    good = pg.write("INSERT INTO accounts (nick, secret) VALUES (?, ?)", ("carol", "h"))
    assert pg.flush(10)
    assert bad < good and pg.rejected == 1
    assert pg.read("SELECT nick FROM accounts ORDER BY nick") == [("alice",), ("carol",)]
    with pytest.raises(StoreUnavailable):
        pg.read("SELECT ?, ?", ("only one",))
    answers = []
    pg.ask("SELECT ?, ?", ("only one",), answers.append)
    assert len(answers) == 1 and answers[0].error


# -- the plugin table guard's keyword scan -----------------------------------------------

def _plugin(store: Store, name: str = "dice") -> tuple[PluginStore, list[str]]:
    failures: list[str] = []
    view = PluginStore(store, name, post=lambda fn, *args: fn(*args),
                       report=lambda plugin, what, exc: failures.append(str(exc)))
    view.migrate(name, [f"CREATE TABLE {name}_t (x TEXT)"])
    return view, failures


def _alice_untouched(store: Store) -> None:
    assert store.read("SELECT nick, secret FROM accounts") == [("alice", "hash")]


@pytest.mark.parametrize("statement", [
    'SELECT "pg_terminate_backend"(pg_backend_pid())',  # a quoted function name
    'SELECT "lo_import"(\'/etc/passwd\')',
    "SELECT pg_catalog . pg_notify('chatd_accounts', 'x alice')",
    "SELECT query_to_xml('SELECT pg_terminate_backend(1)', true, false, '')",
    "SELECT * FROM dblink('dbname=x', 'DELETE FROM accounts') AS t(x int)",
    "CALL dice_proc()",
    "DO LANGUAGE plpgsql 'BEGIN DELETE FROM accounts; END'",
    "COMMENT ON TABLE accounts IS 'mine now'",
    "SET ROLE postgres",
    "RESET ALL",
    "LISTEN chatd_accounts",
    "NOTIFY chatd_accounts, 'x alice'",
    "UNLISTEN *",
    "CREATE TABLE dice_u (x TEXT) INHERITS (accounts)",  # rows seen in accounts' reads
    "CREATE TABLE dice_i (nick TEXT, secret TEXT); ALTER TABLE dice_i INHERIT accounts",
    "CREATE TABLE dice_o (x TEXT) PARTITION OF accounts FOR VALUES IN ('a')",
    "CREATE TABLE dice_p (x TEXT) PARTITION BY LIST (x); "
    "ALTER TABLE dice_p ATTACH PARTITION accounts FOR VALUES IN ('a')",
    "CREATE VIEW dice_v AS SELECT * FROM accounts; DELETE FROM dice_v",  # updatable
    'CREATE TABLE dice_q (x TEXT); ALTER TABLE dice_q RENAME TO "accounts"',
    "ALTER TABLE dice_t RENAME TO public.accounts",
    'UPDATE "public"."accounts" SET secret = \'x\'',
    "SELECT 1 /* a comment */; /* ; */ DELETE FROM accounts -- ;",
    "SELECT 1 /* nested /* */ ; DELETE FROM accounts; */",
    "CREATE TABLE dice_c AS SELECT 1 AS x; DROP TABLE accounts",
    "EXPLAIN ANALYZE DELETE FROM accounts",
    "PREPARE dice_s AS DELETE FROM accounts",
    "LOCK TABLE accounts",
    "SELECT set_config('role', 'postgres', false)",
])
def test_a_plugin_statement_that_reaches_beyond_its_tables_is_refused(pg, statement):
    dice, failures = _plugin(pg)
    dice.write(statement)
    assert pg.flush(10)
    assert len(failures) == 1 and "plugin 'dice' may not" in failures[0], failures
    _alice_untouched(pg)


@pytest.mark.parametrize("statement", [
    "MERGE INTO dice_t USING (SELECT 'a' AS x) s ON dice_t.x = s.x "
    "WHEN MATCHED THEN UPDATE SET x = s.x WHEN NOT MATCHED THEN INSERT (x) VALUES (s.x)",
    "MERGE INTO dice_t USING (SELECT 'a' AS x) s ON dice_t.x = s.x "
    "WHEN MATCHED THEN DELETE",
    "SELECT * INTO dice_copy FROM accounts",
    "CREATE TABLE dice_as AS SELECT nick FROM accounts",
])
def test_a_plugin_statement_on_its_own_tables_is_let_through(pg, statement):
    dice, failures = _plugin(pg)
    dice.write(statement)
    assert pg.flush(10)
    assert failures == []
    _alice_untouched(pg)
