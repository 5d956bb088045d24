"""Moving from SQLite to PostgreSQL: ``chatd --config FILE --copy-store-to URL``.

The source is a real SQLite file filled by a real chatd process (history lines, a
registered nick, a registered room with a ban); the target a real PostgreSQL
database (the ``postgres_url`` fixture) or, for the copy's own logic, a second
SQLite file.  After the copy a chatd on the target replays the history in order,
lets the nick identify with its password and refuses the banned mask; a second
copy, a wrong URL, a source the code does not know and a busy source are refused
or warned about, each with one clear line.
"""

from __future__ import annotations

import io
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.config import load_config
from chatd.store import Store
from chatd.store_copy import CopyRefused, copy_store
from chatd.testing import ServerProcess, write_config

PASSWORD = "correct-horse"
LINES = [f"line {n}" for n in range(1, 8)]
PLUGINS = {"accounts": {"registrations_per_hour": 100},
           "history": {"replay_lines": 50, "max_lines": 1000}}


def _source_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder / "config.yaml", storage={"path": "data/chatd.sqlite3"},
                        plugins=PLUGINS)


def _see(client, line: str) -> None:
    client.expect("^" + re.escape(line) + "$")


def _named(server: ServerProcess, nick: str):
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"is now known as {nick}$")
    return client


def _fill(server: ServerProcess) -> None:
    """A registered nick, a registered room with a ban, and history lines in it."""
    alice = _named(server, "alice")
    alice.send(f"/register {PASSWORD}")
    alice.expect(r"^\*\*\* alice is registered to you")
    alice.send("/join #dev")
    alice.expect(r"^\*\*\* you are the first in #dev")
    alice.send("/register #dev")
    _see(alice, "*** #dev is registered; its founder is alice")
    alice.send("/ban mallory!*@*")
    _see(alice, "*** alice banned mallory!*@* in #dev")
    for line in LINES:
        alice.send(line)
    alice.send("/history #dev 100")  # a round trip: every line above was handled
    alice.expect(r"end of history")


@pytest.fixture
def filled_source(chatd_server, tmp_path) -> Path:
    """The config of a chatd whose SQLite file holds what :func:`_fill` made; stopped."""
    config = _source_config(tmp_path / "source")
    server = chatd_server(config)
    _fill(server)
    assert server.stop() == 0
    return config


def _replayed(client, room: str) -> list[str]:
    client.expect(rf"^\*\*\* history of {re.escape(room)}: the last")
    lines = []
    while not (line := client.recv_line()).startswith("*** end of history"):
        lines.append(re.sub(r"^\[[^\]]*\] ", "", line))
    return lines


def _check_target_serves(server: ServerProcess) -> None:
    """History replays in order, the nick identifies, the banned mask is refused."""
    bob = _named(server, "bob")
    bob.send("/join #dev")
    said = [line for line in _replayed(bob, "#dev") if line.startswith("<alice>")]
    assert said == [f"<alice> {line}" for line in LINES]
    alice = _named(server, "alice")
    alice.send(f"/identify {PASSWORD}")
    _see(alice, "*** you are identified as alice")
    mallory = _named(server, "mallory")
    mallory.send("/join #dev")
    _see(mallory, "! you are banned from #dev (until lifted)")


def _copy_into(config: Path, target: Store) -> str:
    out = io.StringIO()
    copy_store(load_config(str(config)), target, shown="the target", out=out)
    return out.getvalue()


def _sqlite_target(path: Path) -> Store:
    store = Store(path)
    store.open()
    return store


# -- the copy itself, onto a second SQLite file (the logic, without PostgreSQL) ---------

def test_a_copy_onto_an_sqlite_file_serves_the_same_chat(filled_source, chatd_server, tmp_path):
    target = _sqlite_target(tmp_path / "target.sqlite3")
    try:
        said = _copy_into(filled_source, target)
    finally:
        target.close()
    assert re.search(r"^chatd: history: \d+ rows$", said, re.M), said
    assert "chatd: accounts: 1 row\n" in said
    assert "chatd: room_bans: 1 row\n" in said
    assert "every count checked" in said
    assert "warning" not in said  # the source was stopped cleanly
    source = filled_source.parent / "data"
    assert sorted(p.name for p in source.iterdir()) == ["chatd.sqlite3"]  # nothing left
    server = chatd_server(storage={"path": str(tmp_path / "target.sqlite3")}, plugins=PLUGINS)
    _check_target_serves(server)


def test_a_second_copy_into_the_same_database_is_refused(filled_source, tmp_path):
    target = _sqlite_target(tmp_path / "target.sqlite3")
    try:
        _copy_into(filled_source, target)
        with pytest.raises(CopyRefused, match=r"is not empty: accounts \(1 row\), .*history"):
            _copy_into(filled_source, target)
    finally:
        target.close()
    with sqlite3.connect(tmp_path / "target.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (1,)


def test_a_source_newer_than_the_code_is_refused_before_the_target_is_touched(
        filled_source, tmp_path):
    db = filled_source.parent / "data" / "chatd.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE chatd_schema SET version = 99 WHERE owner = 'history'")
    target = _sqlite_target(tmp_path / "target.sqlite3")
    try:
        with pytest.raises(CopyRefused, match=r"'history' tables are at version 99, newer "
                                              r"than the \d+ this chatd knows"):
            _copy_into(filled_source, target)
    finally:
        target.close()
    with sqlite3.connect(tmp_path / "target.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'history'"
                            ).fetchone() == (0,)


def test_an_owner_the_config_does_not_load_is_refused(filled_source, tmp_path):
    db = filled_source.parent / "data" / "chatd.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO chatd_schema (owner, version) VALUES ('karma', 2)")
    target = _sqlite_target(tmp_path / "target.sqlite3")
    try:
        with pytest.raises(CopyRefused, match=r"tables of 'karma' \(version 2\), which this "
                                              r"config does not load"):
            _copy_into(filled_source, target)
    finally:
        target.close()


def test_a_table_no_migration_makes_is_refused(filled_source, tmp_path):
    db = filled_source.parent / "data" / "chatd.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    target = _sqlite_target(tmp_path / "target.sqlite3")
    try:
        with pytest.raises(CopyRefused, match=r"'notes' is made by none of the migrations"):
            _copy_into(filled_source, target)
    finally:
        target.close()


def test_a_source_in_use_is_copied_with_a_warning(filled_source, tmp_path):
    db = filled_source.parent / "data" / "chatd.sqlite3"
    holder = sqlite3.connect(db)  # as a running chatd holds it: WAL, -wal beside the file
    try:
        holder.execute("PRAGMA journal_mode = WAL")
        holder.execute("INSERT INTO history (room, time, kind, nick, target, text) "
                       "SELECT room, time, kind, nick, target, 'late' FROM history LIMIT 1")
        holder.commit()
        target = _sqlite_target(tmp_path / "target.sqlite3")
        try:
            said = _copy_into(filled_source, target)
        finally:
            target.close()
    finally:
        holder.close()
    assert "chatd: warning: chatd.sqlite3-wal exists: a chatd has the file open" in said


def test_no_storage_path_is_a_clear_refusal(tmp_path):
    config = write_config(tmp_path / "config.yaml")
    target = _sqlite_target(tmp_path / "target.sqlite3")
    try:
        with pytest.raises(CopyRefused, match=r"no storage\.path: there is no SQLite file"):
            _copy_into(config, target)
    finally:
        target.close()


# -- the command, onto PostgreSQL -------------------------------------------------------

def _run_copy(config: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--copy-store-to", url],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def _password(url: str) -> str:
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


def test_the_command_copies_into_postgresql_and_chatd_serves_the_same_chat_there(
        filled_source, postgres_url, chatd_server):
    done = _run_copy(filled_source, postgres_url)
    assert done.returncode == 0, done.stderr
    assert _password(postgres_url) not in done.stdout + done.stderr
    assert re.search(r"^chatd: copying .*chatd\.sqlite3 into postgresql://chatd:\*\*\*@",
                     done.stdout, re.M), done.stdout
    assert "chatd: accounts: 1 row\n" in done.stdout
    assert "chatd: rooms: 1 row\n" in done.stdout
    assert "chatd: room_bans: 1 row\n" in done.stdout
    assert re.search(r"^chatd: schema: accounts at version \d+, history at version \d+, "
                     r"moderation at version \d+$", done.stdout, re.M), done.stdout
    assert "warning" not in done.stdout  # the source was stopped cleanly
    server = chatd_server(storage={"url": postgres_url}, plugins=PLUGINS)
    _check_target_serves(server)
    # A line said now is numbered after the copied ones (the sequence was moved on).
    alice = _named(server, "carol")
    alice.send("/join #dev")
    alice.expect(r"^\*\*\* end of history")
    alice.send("after the move")
    alice.send("/history #dev 100")
    alice.expect(r"end of history")
    assert server.stop() == 0
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        said = [text for (text,) in conn.execute(
            "SELECT text FROM history WHERE nick IN ('alice', 'carol') ORDER BY seq")]
    assert said == [*LINES, "after the move"]


def test_every_identity_sequence_continues_after_the_copied_rows(filled_source, postgres_url):
    import psycopg

    assert _run_copy(filled_source, postgres_url).returncode == 0
    with psycopg.connect(postgres_url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND (is_identity = 'YES' "
            "OR column_default LIKE 'nextval(%')").fetchall()
        assert ("history", "seq") in columns
        for table, column in columns:
            largest = conn.execute(f'SELECT max("{column}") FROM "{table}"').fetchone()[0]
            if largest is None:
                continue
            following = conn.execute("SELECT nextval(pg_get_serial_sequence(%s, %s))",
                                     (f'"{table}"', column)).fetchone()[0]
            assert following > largest, (table, column)


def test_a_second_copy_into_the_same_database_is_refused_with_a_clear_message(
        filled_source, postgres_url):
    assert _run_copy(filled_source, postgres_url).returncode == 0
    again = _run_copy(filled_source, postgres_url)
    assert again.returncode == 2
    assert re.search(r"^chatd: cannot copy into postgresql://chatd:\*\*\*@\S+: the database "
                     r"is not empty: accounts \(1 row\), ", again.stderr, re.M), again.stderr
    assert _password(postgres_url) not in again.stdout + again.stderr
    assert "Traceback" not in again.stderr


def test_a_wrong_password_is_a_clear_error_without_the_password(filled_source, postgres_url):
    secret = "not-the-password-4711"
    wrong = postgres_url.replace(_password(postgres_url), secret)
    done = _run_copy(filled_source, wrong)
    assert done.returncode == 2
    assert re.search(r"^chatd: cannot copy into postgresql://chatd:\*\*\*@.*password",
                     done.stderr, re.M), done.stderr
    assert secret not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_url_that_is_not_postgresql_is_refused(filled_source):
    done = _run_copy(filled_source, "mysql://root:hunter2@localhost/chat")
    assert done.returncode == 2
    assert "hunter2" not in done.stdout + done.stderr
    assert re.search(r"^chatd: cannot copy: --copy-store-to takes a postgresql:// URL",
                     done.stderr, re.M), done.stderr


def test_a_row_postgresql_refuses_rolls_the_whole_copy_back_and_it_can_run_again(
        filled_source, postgres_url):
    import psycopg

    db = filled_source.parent / "data" / "chatd.sqlite3"
    with sqlite3.connect(db) as conn:  # the last table copied: the others went in before
        conn.execute("UPDATE rooms SET topic = ?", ("nul \x00 byte",))
    done = _run_copy(filled_source, postgres_url)
    assert done.returncode == 2
    assert re.search(r"^chatd: cannot copy into \S+: rooms: \w+: .*; nothing was copied$",
                     done.stderr, re.M), done.stderr
    assert "Traceback" not in done.stderr
    with psycopg.connect(postgres_url) as conn:
        for table in ("accounts", "history", "room_bans", "rooms"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE rooms SET topic = ''")
    again = _run_copy(filled_source, postgres_url)
    assert again.returncode == 0, again.stderr
    assert "chatd: rooms: 1 row\n" in again.stdout


def test_a_server_that_is_not_there_is_a_clear_error_without_the_password(filled_source):
    from chatd.testing import free_port

    secret = "s3cret-never-shown"
    done = _run_copy(filled_source, f"postgresql://chatd:{secret}@127.0.0.1:{free_port()}/chat")
    assert done.returncode == 2
    assert re.search(r"^chatd: cannot copy into postgresql://chatd:\*\*\*@127\.0\.0\.1:\d+/chat: "
                     r".*(refused|failed)", done.stderr, re.M), done.stderr
    assert secret not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
