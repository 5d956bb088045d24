"""History: real chatd processes on real databases, restarted, killed and starved of disk.

What a user sees (the lines between the markers, with times), what survives a
restart and a ``kill -9``, the bounds of ``/history``, retention, and a disk
that fills up under a running server.  Every test taking ``storage`` runs twice:
on an SQLite file, then on a PostgreSQL database (the kit's throwaway cluster).
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from disks import DISK_PROBLEM, take_every_free_byte

from chatd.builtin import history
from chatd.store import Store
from chatd.testing import QUICK_STOP, ServerProcess, write_config

STAMP = r"\[(?:\d{4}-\d\d-\d\d )?\d\d:\d\d\] "  # today's lines, or older ones (midnight)


def _history_config(path: Path, storage: dict[str, Any], **history: object) -> Path:
    """A config on the database ``storage`` (the fixture's section)."""
    return write_config(path, storage=storage,
                        plugins={"history": {"max_lines": 1000, **history}})


def _between_markers(client, room: str = "#lobby") -> list[str]:
    """Read a history block; return its lines without their times."""
    client.expect(rf"^\*\*\* history of {re.escape(room)}: the last")
    lines = []
    while True:
        line = client.recv_line()
        if line.startswith("*** end of history"):
            return lines
        assert re.match(STAMP, line), f"history line without its time: {line!r}"
        lines.append(re.sub(rf"^{STAMP}", "", line))


def query(storage: dict[str, Any], sql: str) -> list[tuple[Any, ...]]:
    """``sql`` run on the database of ``storage`` (the fixture's section), read-only
    on SQLite; [] while the table is not there yet."""
    if "path" in storage:
        try:
            with sqlite3.connect(f"file:{storage['path']}?mode=ro", uri=True) as conn:
                return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []
    import psycopg
    with psycopg.connect(storage["url"], autocommit=True) as conn:
        try:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
        except psycopg.errors.UndefinedTable:
            return []


def _stored(storage: dict[str, Any]) -> list[tuple[str, str]]:
    return query(storage, "SELECT nick, text FROM history ORDER BY seq")  # type: ignore[return-value]


def test_a_late_joiner_sees_the_last_lines_with_their_times_between_markers(chatd_server,
                                                                           storage):
    server = chatd_server(storage=storage, plugins={"history": {"replay_lines": 3}})
    alice = server.client()
    alice.send("/nick alice")
    alice.expect("alice")
    for text in ("one", "two", "three", "four"):
        alice.send(text)
    alice.send("/me waves")
    time.sleep(0.2)
    bob = server.client()
    assert _between_markers(bob) == ["<alice> three", "<alice> four", "* alice waves"]
    alice.send("live now")
    bob.expect_line("<alice> live now")  # after the marker, live chat: no time, no repeat


def test_history_survives_a_restart_in_order_and_only_once(chatd_server, tmp_path, storage):
    # Batches held a whole second: only the shutdown's own flush can save the lines.
    config = _history_config(tmp_path / "config.yaml", {**storage, "batch_seconds": 1.0})
    first = chatd_server(config)
    alice = first.client()
    alice.send("/nick alice")
    alice.expect("alice")
    said = [f"line {i}" for i in range(30)]
    for text in said:
        alice.send(text)
    alice.send("/history 1")  # a round trip: every line before it was handled
    alice.expect(r"end of history")
    alice.close()  # nobody left to say goodbye to: the shutdown takes no time
    assert first.stop() == 0  # SIGTERM: everything queued is committed
    second = chatd_server(config)
    bob = second.client()
    assert _between_markers(bob) == [f"<alice> {t}" for t in said[-20:]]
    bob.send("/history 100")
    assert _between_markers(bob) == [f"<alice> {t}" for t in said]
    assert _stored(storage) == [("alice", t) for t in said]


def test_kill_9_loses_at_most_the_last_batch_window_and_duplicates_nothing(chatd_server,
                                                                           tmp_path, storage):
    config = _history_config(tmp_path / "config.yaml", storage, replay_lines=0)
    server = chatd_server(config)
    sender, reader = server.client(), server.client()
    sender.send("/nick sender")
    sender.expect("sender")
    reader.expect("sender")
    heard = []
    # Heavy traffic; the reader's copy of a line means the server handled it, so
    # its write was queued then.  Stop hearing at some point, keep sending, kill.
    for i in range(400):
        sender.send(f"n{i:04d}")
        if i < 300:
            reader.expect_line(f"<sender> n{i:04d}")
            heard.append(f"n{i:04d}")
        if i == 300:
            time.sleep(0.5)  # 100 batch windows: everything heard by now is committed
    server.kill()
    stored = [text for _nick, text in _stored(storage)]
    assert stored[: len(heard)] == heard, "a line heard well before the kill was lost"
    assert stored == sorted(set(stored)), "history reordered or duplicated"
    restarted = chatd_server(config)
    bob = restarted.client()
    bob.send(f"/history {len(stored)}")
    assert _between_markers(bob) == [f"<sender> {text}" for text in stored]


def test_history_command_bounds_and_errors(chatd_server, storage):
    server = chatd_server(storage=storage, plugins={"history": {"max_lines": 5}})
    alice = server.client()
    for i in range(8):
        alice.send(f"m{i}")
    alice.send("/history 0")
    alice.expect(r"^! ")
    alice.send("/history 5 more")
    alice.expect(r"^! usage: /history")
    alice.send("/history #elsewhere 3")
    alice.expect(r"^! you can see the history of rooms you are in")
    alice.send("/history 500")
    alice.expect(r"showing the last 5 lines")
    assert len(_between_markers(alice)) == 5
    alice.send("/history #lobby 2")
    assert [line.split()[-1] for line in _between_markers(alice)] == ["m6", "m7"]


def test_set_history_off_stops_the_replay_on_join_for_that_client(chatd_server, storage):
    # the shipped replay, not the kit's none
    server = chatd_server(storage=storage, plugins={"history": {}})
    alice, bot = server.client(), server.client()
    alice.send("/join #dev")
    alice.send("said before")
    alice.send("/history 1")  # a round trip: the line is said before the bot joins
    alice.expect("end of history")
    bot.send("/set history off")
    bot.expect(r"^\*\*\* history off")
    bot.send("/join #dev")
    bot.expect("also in #dev")
    bot.expect_nothing(0.5)
    carol = server.client()
    carol.send("/join #dev")
    assert _between_markers(carol, "#dev") == [f"<{alice.nick}> said before"]


def test_a_room_kept_out_of_history_is_not_stored_or_replayed(chatd_server, tmp_path,
                                                             storage):
    config = _history_config(tmp_path / "config.yaml", storage,
                             rooms={"#ops": {"store": False}})
    server = chatd_server(config)
    alice = server.client()
    alice.send("/join #ops")
    alice.send("secret plans")
    alice.send("/join #lobby")
    alice.send("public words")
    alice.send("/history 1")
    alice.expect("end of history")
    server.stop()
    assert [t for _n, t in _stored(storage)] == ["public words"]


def test_retention_deletes_old_lines_and_keeps_the_newest_per_room(chatd_server, tmp_path,
                                                                   storage):
    config = _history_config(tmp_path / "config.yaml", storage, retention_lines=5,
                             retention_interval_seconds=0.2)
    server = chatd_server(config)
    alice = server.client()
    for i in range(12):
        alice.send(f"r{i}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if [t for _n, t in _stored(storage)] == [f"r{i}" for i in range(7, 12)]:
            break
        time.sleep(0.1)
    assert [t for _n, t in _stored(storage)] == [f"r{i}" for i in range(7, 12)]


def test_retention_by_age(chatd_server, tmp_path, storage):
    config = _history_config(tmp_path / "config.yaml", storage,
                             retention_days=0.00002,  # 1.7 s
                             retention_interval_seconds=0.2)
    server = chatd_server(config)
    alice = server.client()
    alice.send("soon gone")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _stored(storage):
        time.sleep(0.05)
    assert _stored(storage), "never stored"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _stored(storage):
        time.sleep(0.1)
    assert not _stored(storage)


def test_a_bad_history_setting_is_a_config_error_naming_the_key(tmp_path):
    config = write_config(tmp_path / "config.yaml",
                          plugins={"history": {"replay_lines": -1}})
    result = subprocess.run(
        ["python3", "-m", "chatd", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "plugins.history.replay_lines" in result.stderr + result.stdout


# -- a disk that fills up -----------------------------------------------------------------


def test_a_full_disk_degrades_history_not_the_chat_and_writing_resumes(chatd_server, tmp_path,
                                                                        small_disk):
    config = write_config(
        tmp_path / "config.yaml",
        storage={"path": str(small_disk / "chatd.sqlite3")},
        plugins={"history": {"max_lines": 1000, "replay_lines": 0}},
    )
    server: ServerProcess = chatd_server(config)
    alice, bob = server.client(), server.client()
    alice.send("/nick alice")
    bob.expect("alice")
    alice.send("before the disk filled")
    bob.expect_line("<alice> before the disk filled")
    alice.send("/history 1")
    alice.expect("end of history")
    filler = take_every_free_byte(small_disk)
    padding = "x" * 1000  # pages the full disk cannot give
    during = [f"during {i} {padding}" for i in range(50)]
    for text in during:  # chat goes on while nothing can be written
        alice.send(text)
        bob.expect_line(f"<alice> {text}")
    server.wait_for_log(DISK_PROBLEM, timeout=10)
    expected = ["<alice> before the disk filled"] + [f"<alice> {t}" for t in during]
    bob.send("/history 100")  # from memory what the disk does not have yet: no gap
    assert _between_markers(bob) == expected
    filler.unlink()
    alice.send("after it came back")
    bob.expect_line("<alice> after it came back")
    db = {"path": str(small_disk / "chatd.sqlite3")}
    deadline = time.monotonic() + 20  # retries back off to 5 s
    while time.monotonic() < deadline and ("alice", "after it came back") not in _stored(db):
        time.sleep(0.1)
    assert _stored(db) == [("alice", t.removeprefix("<alice> ")) for t in expected] + [
        ("alice", "after it came back")], "not everything written once the disk came back"
    server.wait_for_log(r"store: writing again", timeout=15)  # posted to the loop, then logged
    bob.send("/history 100")
    assert _between_markers(bob) == [*expected, "<alice> after it came back"]


def test_a_reload_on_a_full_disk_does_not_stop_the_chat(chatd_server, tmp_path, small_disk):
    """A reload while the disk is full: the built-ins' tables are up to date, so their
    migrations have nothing to wait for, and nothing else waits for the stuck writer
    on the loop; chat goes on during the reload (a round trip within the kit's read
    timeout, where it used to stop for 10 s a migration and 10 s accounts' flush)
    and the reload completes."""
    config = write_config(tmp_path / "config.yaml",
                          storage={"path": str(small_disk / "chatd.sqlite3")},
                          limits=QUICK_STOP)
    server: ServerProcess = chatd_server(config)
    alice, bob = server.client(), server.client()
    alice.send("/nick alice")
    bob.expect("alice")
    take_every_free_byte(small_disk)
    for i in range(30):  # a batch the writer cannot commit: it waits and retries
        alice.send(f"during {i} {'x' * 1000}")
    bob.expect(r"^<alice> during 29 ")
    server.wait_for_log(DISK_PROBLEM, timeout=10)
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"received SIGHUP")
    alice.send("/rooms")  # answered by the loop, which the reload must not hold
    alice.expect(r"^\*\*\* 1 room: ")
    server.wait_for_log(r"reloaded .*: plugins")
    bob.send("still here")
    alice.expect_line("<guest-2> still here")


def _identified(server, nick: str, password: str = "correct-horse-1"):
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"is now known as {nick}$")
    client.send(f"/register {password}")
    client.expect(rf"^\*\*\* {nick} is registered to you")
    return client


def test_private_messages_are_kept_only_if_configured_and_shown_to_the_two_alone(
        chatd_server, tmp_path, storage):
    config = write_config(tmp_path / "config.yaml", storage=storage,
                          plugins={"history": {"private": True}})
    server = chatd_server(config)
    alice = _identified(server, "alice")
    bob = _identified(server, "bob")
    carol = _identified(server, "carol")
    alice.send("/msg bob are you free at 3?")
    bob.expect(r"^\*alice\* are you free at 3\?$")
    bob.send("/msg alice yes")
    alice.expect(r"^\*bob\* yes$")
    stranger = server.client()  # not identified: nothing of what it says is kept
    stranger.send("/msg bob unkept")
    bob.expect(r"^\*guest-\d+\* unkept$")
    bob.send("/history alice")
    bob.expect_line("*** private history with alice: the last 2 lines")
    bob.expect(rf"^{STAMP}\*alice\* are you free at 3\?$")
    bob.expect(rf"^{STAMP}-> \*alice\* yes$")  # its own line reads as it did when sent
    bob.expect_line("*** end of history")
    carol.send("/history alice")  # a third person sees none of it
    carol.expect(r"^\*\*\* no private history with alice$")
    stranger.send("/history bob")
    stranger.expect(r"^! identify first: a private history belongs to your account$")
    server.stop()
    assert query(storage, "SELECT nick, target, text FROM history WHERE kind = 'privmsg' "
                          "ORDER BY seq") == [
        ("alice", "bob", "are you free at 3?"), ("bob", "alice", "yes")]


def test_a_dropped_nicks_private_lines_are_deleted_from_the_database(chatd_server, tmp_path,
                                                                    storage):
    """The delete of a dropped nick's conversations finds them whichever side of the
    pair's key the nick is on (``~carol~dave``, ``~bob~carol``), on both databases;
    other conversations stay."""
    config = write_config(tmp_path / "config.yaml", storage=storage,
                          plugins={"history": {"private": True},
                                   "accounts": {"registrations_per_hour": 10}})
    server = chatd_server(config)
    alice, _bob, carol, dave = (_identified(server, nick)
                                for nick in ("alice", "bob", "carol", "dave"))
    for sender, recipient, text in ((alice, "bob", "kept"), (carol, "bob", "gone 1"),
                                    (alice, "carol", "gone 2"), (carol, "dave", "gone 3")):
        sender.send(f"/msg {recipient} {text}")
    dave.expect(r"^\*carol\* gone 3$")
    carol.send("/drop correct-horse-1")
    carol.expect(r"^\*\*\* carol is no longer registered")
    assert server.stop() == 0
    assert query(storage, "SELECT nick, target, text FROM history WHERE kind = 'privmsg' "
                          "ORDER BY seq") == [("alice", "bob", "kept")]


def test_private_messages_are_not_kept_by_default(chatd_server, tmp_path, storage):
    config = write_config(tmp_path / "config.yaml", storage=storage)
    server = chatd_server(config)
    alice = _identified(server, "alice")
    bob = _identified(server, "bob")
    alice.send("/msg bob secret plans")
    bob.expect(r"^\*alice\* secret plans$")
    bob.send("/history alice")
    bob.expect_line("! private messages are not kept on this server")
    server.stop()
    assert query(storage, "SELECT count(*) FROM history WHERE kind = 'privmsg'") == [(0,)]


def test_rows_from_before_the_codec_columns_still_replay_and_new_rows_carry_identity(
        chatd_server, tmp_path):
    """Issue 19: history keeps the event codec's identity fields (node, user, account);
    a database written before them is migrated, and its lines replay as they were."""
    db = tmp_path / "data" / "chatd.sqlite3"
    config = _history_config(tmp_path / "config.yaml", {"path": str(db)}, replay_lines=5)
    config.write_text(config.read_text() + "server:\n  node_id: node-a\n")
    old = Store(db)
    old.open()
    old.migrate("history", history.SCHEMA[:2])  # the table as issue 18 left it
    old.close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO history (seq, room, time, kind, nick, target, text) VALUES "
                     "(1, '#lobby', ?, 'message', 'olduser', '#lobby', 'from before')",
                     (time.time() - 60,))
    server = chatd_server(config)
    alice = server.client()
    assert _between_markers(alice) == ["<olduser> from before"]
    alice.send("/nick alice")
    alice.expect("alice")
    alice.send("said now")
    alice.send("/history 5")
    assert _between_markers(alice) == ["<olduser> from before", "<alice> said now"]
    assert server.stop() == 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT nick, node, ident, host, account FROM history "
                            "ORDER BY seq").fetchall()
    assert rows[0] == ("olduser", None, None, None, None)
    nick, node, ident, host, account = rows[1]
    assert (nick, node, ident, account) == ("alice", "node-a", "guest-1", None)
    assert re.fullmatch(r"[0-9a-f]{12}\.cloak", host)  # who it was at connect: a cloak


def test_without_cloaks_history_stores_the_ident_and_never_the_address(chatd_server,
                                                                       tmp_path, storage):
    """docs/persistence.md: chatd never stores users' addresses.  With
    ``server.cloak_addresses: false`` a client's user is ``guest-1@127.0.0.1``: history
    keeps ``guest-1`` of it, and no host."""
    config = _history_config(tmp_path / "config.yaml", storage)
    config.write_text(config.read_text() + "server:\n  cloak_addresses: false\n")
    server = chatd_server(config)
    alice = server.client()
    alice.send("hello")
    alice.send("/history 1")
    alice.expect(r"end of history")
    assert server.stop() == 0
    rows = query(storage, "SELECT * FROM history")
    parts = query(storage, "SELECT ident, host FROM history")
    assert parts == [("guest-1", None)]
    assert not [row for row in rows if "127.0.0.1" in repr(row)]
