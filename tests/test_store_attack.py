"""Attacks on the store on PostgreSQL (issue 22, part F): the ``?`` translation, the
plugin table guard's keyword scan, the password's redaction, change notices.  Each
case is what a careless or hostile plugin (or operator's typo) could send; the store
must answer it clearly and keep everyone else's data and writer intact."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from urllib.parse import urlsplit

import pytest

from chatd.chat.tables import PluginStore
from chatd.config_rules import redact_url
from chatd.store import Store, StoreUnavailable
from chatd.store_postgres import translate, wait_ready
from chatd.testing import QUICK_STOP, wait_until, write_config


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


def test_a_unicode_escaped_name_cannot_pass_for_a_plugin_named_u(pg):
    """U&"\\0061ccounts" is accounts; a plugin named ``u`` must not read it as its ``U``."""
    u, failures = _plugin(pg, "u")
    u.write('DELETE FROM U&"\\0061ccounts"')
    u.write("INSERT INTO u_t (x) VALUES (U&'\\0061')")
    assert pg.flush(10)
    assert len(failures) == 2 and all("plugin 'u' may not" in f for f in failures), failures
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


# -- the password, never shown -------------------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:s3cret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:s%33cret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:pa/s3cret@h/db", "postgresql://u:***@h/db"),  # / # ? @ unencoded
    ("postgresql://u:pa#s3cret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:pa@s3cret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:pa?s3cret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:p@h/db?application_name=a@b", "postgresql://u:***@h/db?application_name=a@b"),
    ("postgresql://u@h/db?password=s3cret&x=1", "postgresql://u@h/db?password=***&x=1"),
    ("postgresql://u@h/db?PassWord=s3cret", "postgresql://u@h/db?PassWord=***"),
    ("postgresql://u@h/db?sslpassword=s3cret", "postgresql://u@h/db?sslpassword=***"),
    ("postgresql://u@h/db?pass%77ord=s3cret", "postgresql://u@h/db?pass%77ord=***"),
    ("postgresql://u@h/db?x=1#password=s3cret", "postgresql://u@h/db?x=1#***"),
    ("host=h password=s3cret dbname=d", "host=h password=*** dbname=d"),
    ("host=h password = 's3 cret' dbname=d", "host=h password = *** dbname=d"),
])
def test_every_shape_of_password_is_redacted(url, shown):
    assert redact_url(url) == shown


def _check_config(tmp_path, url: str) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "config.yaml", storage={"url": url})
    return subprocess.run([sys.executable, "-m", "chatd", "--config", str(config),
                           "--check-config"], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("url", [
    "postgresql://u:s3cret%zz@127.0.0.1:1/db",  # psycopg quotes the bad token
    "postgresql://u@127.0.0.1:1/db?password=s3cret&bogus=1",
    "host=127.0.0.1 password=s3cret",
])
def test_a_malformed_url_is_a_clear_error_without_the_password(tmp_path, url):
    done = _check_config(tmp_path, url)
    assert done.returncode != 0
    assert "s3cret" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "storage.url" in done.stderr, done.stderr


def test_a_refused_password_given_as_parameters_shows_in_no_log_stats_or_metrics(
        chatd_server, postgres_url):
    """The password as ``?pass%77ord=`` (percent-encoded name and value) and an
    ``sslpassword``: the problem report, the log, /stats and /metrics never carry it."""
    parts = urlsplit(postgres_url)
    wrong = (f"postgresql://chatd@{parts.hostname}:{parts.port}{parts.path}"
             "?pass%77ord=Wr0ng%2FPass%23word&sslpassword=Other-S3cret")
    server = chatd_server(storage={"url": wrong}, metrics={"enabled": True, "port": 0},
                          plugins={"oper": {"password": "oper-pass-long"}},
                          limits=QUICK_STOP)
    server.wait_for_log(r"storage degraded")
    op = server.client()
    op.send("/oper oper-pass-long")
    op.expect(r"^\*\*\* you are now an operator$")
    op.send("/stats")
    failing = op.expect(r"^\*\*\* storage: FAILING: (.*)$").group(1)
    assert "password authentication failed" in failing and "pass%77ord=***" in failing
    metrics = server.wait_for_log(r"metrics on (http://[\d.]+:\d+/metrics)").group(1)
    with urllib.request.urlopen(metrics, timeout=10) as answer:
        body = answer.read().decode()
    for secret in ("Wr0ng", "Wr0ng%2FPass%23word", "Wr0ng/Pass#word", "Other-S3cret"):
        assert secret not in server.log() and secret not in failing and secret not in body


# -- change notices -------------------------------------------------------------------

def test_a_listener_whose_connection_flaps_backs_off(pg, postgres, postgres_url):
    """Every LISTEN connection cut as soon as it is made, for 1.5 s: the listener
    pauses longer after each loss (0.1, 0.2, 0.4, 0.8 s...) instead of reconnecting
    (and telling every plugin to reload everything) as fast as the server lets it."""
    heard: list[str | None] = []
    pg.listen("chatd_accounts", heard.append)
    assert wait_ready(pg._db)
    database = urlsplit(postgres_url).path.lstrip("/")
    killed: set[int] = set()
    stop = threading.Event()

    def cut() -> None:
        while not stop.wait(0.01):
            rows = postgres.admin.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND query LIKE 'LISTEN%%'", (database,)).fetchall()
            killed.update(pid for pid, _ in rows)

    cutter = threading.Thread(target=cut)
    cutter.start()
    stop.wait(1.5)
    stop.set()
    cutter.join()
    assert 1 <= len(killed) <= 6, killed
    assert wait_ready(pg._db, 10)  # and it comes back once the cutting stops
    assert heard.count(None) <= len(killed)


# -- the copy command: what an SQLite file may hold that PostgreSQL will not ------------

@pytest.fixture
def copy_source(chatd_server, tmp_path):
    """A config whose SQLite file a real chatd filled (test_store_copy's), stopped."""
    from test_store_copy import _fill, _source_config

    config = _source_config(tmp_path / "source")
    server = chatd_server(config)
    _fill(server)
    assert server.stop() == 0
    return config


@pytest.mark.parametrize(("corrupt", "why"), [
    # Invalid UTF-8 (a lone surrogate as CESU-8 bytes), which SQLite keeps as TEXT.
    ("UPDATE history SET text = CAST(x'6C6F6E6520EDA080' AS TEXT) "
     "WHERE seq = (SELECT max(seq) FROM history)", r"history: \w+Error: .*; nothing was copied"),
    # A text where a time belongs (SQLite types the value, not the column): one line.
    ("UPDATE history SET time = 'yesterday' WHERE seq = (SELECT max(seq) FROM history)",
     r"history: \w+: .*; nothing was copied"),
])
def test_a_source_value_postgresql_cannot_hold_is_refused_clearly_and_copies_nothing(
        copy_source, postgres_url, corrupt, why):
    import psycopg
    from test_store_copy import _run_copy

    db = copy_source.parent / "data" / "chatd.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute(corrupt)
    done = _run_copy(copy_source, postgres_url)
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(r"^chatd: cannot copy into \S+: " + why + "$", done.stderr, re.M), \
        done.stderr
    assert "Traceback" not in done.stderr
    with psycopg.connect(postgres_url) as conn:
        for table in ("accounts", "history", "room_bans", "rooms"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_the_largest_integer_where_a_text_belongs_is_copied_as_its_text(copy_source,
                                                                       postgres_url):
    import psycopg
    from test_store_copy import _run_copy

    with sqlite3.connect(copy_source.parent / "data" / "chatd.sqlite3") as conn:
        conn.execute("UPDATE rooms SET topic = 9223372036854775807")
    done = _run_copy(copy_source, postgres_url)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT topic FROM rooms").fetchall() == [("9223372036854775807",)]


def test_a_target_with_rows_in_a_table_chatd_does_not_know_is_refused(copy_source,
                                                                     postgres_url):
    import psycopg
    from test_store_copy import _run_copy

    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE someone_elses (x TEXT)")
        conn.execute("INSERT INTO someone_elses VALUES ('theirs')")
    done = _run_copy(copy_source, postgres_url)
    assert done.returncode == 2
    assert re.search(r"the database is not empty: someone_elses \(1 row\)", done.stderr), \
        done.stderr
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT x FROM someone_elses").fetchall() == [("theirs",)]


def test_a_write_the_server_refuses_inside_a_batch_costs_the_others_nothing(pg):
    """A server-side error aborts PostgreSQL's whole transaction: the writes batched
    with it must still land, once, and the bad one alone be rejected."""
    gate = threading.Event()
    pg.write(lambda conn: gate.wait(10))  # hold the writer: the next ones are one batch
    pg.write("INSERT INTO accounts (nick, secret) VALUES (?, ?)", ("bob", "h"))
    pg.write("INSERT INTO accounts (nick, secret) VALUES (?, ?)", ("alice", "dup"))
    pg.write("INSERT INTO no_such_table (x) VALUES (?)", ("x",))
    pg.write("INSERT INTO accounts (nick, secret) VALUES (?, ?)", ("carol", "h"))
    gate.set()
    assert pg.flush(10)
    assert pg.rejected == 2
    assert pg.read("SELECT nick, secret FROM accounts ORDER BY nick") == [
        ("alice", "hash"), ("bob", "h"), ("carol", "h")]


def test_a_notice_at_the_payload_limit_arrives_whole_and_one_byte_more_is_refused(
        pg, postgres_url):
    other = Store(None, url=postgres_url, read_timeout=5.0)
    other.open()
    heard: list[str | None] = []
    other.listen("chatd_moderation", heard.append)
    assert wait_ready(other._db)
    biggest = "é" * 3500  # 7000 bytes: the limit, with the origin's prefix under 8000
    pg.notify("chatd_moderation", biggest)
    with pytest.raises(ValueError, match="at most 7000 bytes"):
        pg.notify("chatd_moderation", biggest + "x")
    with pytest.raises(ValueError, match="plain channel name"):
        pg.listen('chatd"; DROP TABLE accounts; --', heard.append)
    assert pg.flush(10)
    assert wait_until(lambda: heard == [biggest], 5)
    other.close()
