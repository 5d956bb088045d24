"""History on PostgreSQL: several processes, one database; and a database that does not answer.

Real chatd processes on the kit's throwaway cluster (``postgres`` / ``postgres_url``):

* two processes write one room (history's ``seq`` is the database's identity, so
  neither numbers rows the other also numbers); after a restart of both, each
  replays every line once, in the database's order, each process's lines in the
  order they were said;
* a database whose backends are frozen (SIGSTOP) or gone: the client that asked
  is told "history is unavailable right now", its later lines wait for that
  answer, everybody else chats on; a replay that memory holds needs no read.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from test_history import _between_markers, query

from chatd.testing import write_config

HISTORY = {"replay_lines": 50, "max_lines": 1000}


def _config(folder: Path, url: str, node: str, **storage: Any) -> Path:
    folder.mkdir(exist_ok=True)
    return write_config(folder / f"{node}.yaml", storage={"url": url, **storage},
                        server={"node_id": node}, plugins={"history": HISTORY})


def _named(server: Any, nick: str) -> Any:
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"is now known as {nick}$")
    return client


def _committed(storage: dict[str, Any], text: str) -> None:
    """Wait until the line ``text`` is in the database (its writer committed it)."""
    deadline = time.monotonic() + 10
    while text not in [t for _n, t in _history(storage)]:
        assert time.monotonic() < deadline, f"{text!r} never committed"
        time.sleep(0.02)


def _history(storage: dict[str, Any]) -> list[tuple[str, str]]:
    return query(storage, "SELECT nick, text FROM history ORDER BY seq")  # type: ignore[return-value]


def test_history_written_by_two_processes_into_one_room_replays_once_each_in_order(
        chatd_server, tmp_path, postgres_url):
    storage = {"url": postgres_url}
    configs = [_config(tmp_path, postgres_url, node) for node in ("node-a", "node-b")]
    first, second = chatd_server(configs[0]), chatd_server(configs[1])
    alice, bob = _named(first, "alice"), _named(second, "bob")
    # Taking turns, each line committed before the other speaks: one order for sure.
    turns = []
    for i in range(4):
        for client, nick in ((alice, "alice"), (bob, "bob")):
            text = f"turn {i} of {nick}"
            client.send(text)
            _committed(storage, text)
            turns.append((nick, text))
    # Then both at once: the database orders them, each process's own in its order.
    burst_a = [f"a{i:03d}" for i in range(60)]
    burst_b = [f"b{i:03d}" for i in range(60)]
    for text_a, text_b in zip(burst_a, burst_b, strict=True):
        alice.send(text_a)
        bob.send(text_b)
    _committed(storage, burst_a[-1])
    _committed(storage, burst_b[-1])
    # A process shows the other's lines too, read from the database.
    alice.send("/history 200")
    stored = _history(storage)
    assert _between_markers(alice) == [f"<{n}> {t}" for n, t in stored]
    for client in (alice, bob):
        client.close()
    assert first.stop() == 0 and second.stop() == 0

    stored = _history(storage)
    assert stored[:len(turns)] == turns
    texts = [t for _n, t in stored]
    assert sorted(texts) == sorted({t for _n, t in turns} | set(burst_a) | set(burst_b)), \
        "a line lost or written twice"
    assert [t for t in texts if t.startswith("a")] == burst_a
    assert [t for t in texts if t.startswith("b")] == burst_b
    expected = [f"<{n}> {t}" for n, t in stored]
    restarted = [chatd_server(config) for config in configs]
    for server in restarted:
        carol = server.client()  # the join replay: the last 50, read from the database
        assert _between_markers(carol) == expected[-50:]
        carol.send("/history 200")
        assert _between_markers(carol) == expected


# -- a database that does not answer ------------------------------------------------------


def _backends(url: str) -> list[int]:
    """The server processes serving ``url``'s database (chatd's connections to it)."""
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid()", (database,)).fetchall()
    return [pid for (pid,) in rows]


@contextlib.contextmanager
def _frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP the processes (a database that hangs: no error, no answer), SIGCONT after."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_a_frozen_database_makes_history_unavailable_to_the_asker_alone(
        chatd_server, tmp_path, postgres_url):
    config = _config(tmp_path, postgres_url, "node-a", ask_timeout_seconds=0.5)
    server = chatd_server(config)
    alice, bob, carol = (_named(server, nick) for nick in ("alice", "bob", "carol"))
    for text in ("one", "two", "three"):
        alice.send(text)
    alice.send("/history 1")  # a fence: the lines are in memory (#lobby's first join read
    assert _between_markers(alice) == ["<alice> three"]  # the database: a connection)
    backends = _backends(postgres_url)
    assert backends, "chatd holds no connection to the database"
    with _frozen(backends):
        dave = server.client()  # #lobby's lines are in memory: its replay reads nothing
        assert _between_markers(dave) == ["<alice> one", "<alice> two", "<alice> three"]
        alice.send("/history 100")  # more than memory holds: a read, which cannot answer
        alice.send("after the answer")  # waits for it
        carol.send("carol goes on")  # nobody else waits
        bob.expect(r"^<carol> carol goes on$")
        alice.expect(r"^! history is unavailable right now \(the database did not answer")
        bob.expect(r"^<alice> after the answer$")  # after carol's: it waited
        dave.send("/join #elsewhere")  # a room not in memory: its replay needs a read
        dave.expect(r"^\*\*\* the history of #elsewhere is unavailable right now")
        dave.send("/rooms")  # and its later lines go on once it is told
        dave.expect(r"^\*\*\* 2 rooms: ")
    alice.send("/history 100")  # the database is back: so is history
    assert _between_markers(alice) == ["<alice> one", "<alice> two", "<alice> three",
                                       "<carol> carol goes on", "<alice> after the answer"]
    assert server.stop() == 0  # (before the database is dropped: no reconnecting to it)
    assert _history({"url": postgres_url}) == [  # what was queued meanwhile, written once
        ("alice", "one"), ("alice", "two"), ("alice", "three"), ("carol", "carol goes on"),
        ("alice", "after the answer")]
