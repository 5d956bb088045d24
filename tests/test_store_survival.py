"""The store's writer never dies (issue 18 rule 2), in a real chatd process.

A plugin queues writes SQLite cannot take (a lone surrogate, a write function
with a bug) and then kills the writer thread outright; chat goes on, operators
see it all in ``/stats`` and the metrics, and after a restart every line said
is in the history.  The in-process cases, one fault at a time, are in
``tests/test_store.py``.
"""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatd.testing import ChatClient, ServerProcess, operator_stats, parked_operator, write_config

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., ServerProcess]
PASSWORD = "correct-horse-battery"
#: The good writes of the test: five history lines and two notes of the plugin.
GOOD_WRITES = 7

#: The plugin: "poison" queues two bad writes between two good ones; "kill the
#: writer" forces an exception into the writer thread while it waits for work
#: (where nothing in chatd catches it: inside a write, anything raised is that
#: write's fault and dropped with it), then wakes it.
POISON_PLUGIN = r'''
"""Bad writes and a killed writer thread, on command."""
import ctypes
import sys
import threading
import time

from chatd import hookimpl


class Killed(BaseException):
    """Forced into the writer thread from outside."""


@hookimpl
def chatd_startup(server):
    server.store.migrate("poison", ["CREATE TABLE poison_notes (text TEXT NOT NULL);"])


@hookimpl
def chatd_message(client, text):
    store = client.server.store
    if text == "poison":
        store.write("INSERT INTO poison_notes (text) VALUES (?)", ("\ud800",))
        store.write(_buggy)
        store.write("INSERT INTO poison_notes (text) VALUES (?)", ("kept",))
    elif text == "kill the writer":
        _kill(next(t for t in threading.enumerate() if t.name == "chatd-store"))
        store.write("INSERT INTO poison_notes (text) VALUES (?)", ("wakes it",))


def _buggy(conn):
    raise ValueError("a bug in a plugin's write")


def _kill(writer):
    deadline = time.monotonic() + 5
    while not _waiting_for_work(writer):
        if time.monotonic() > deadline:
            raise RuntimeError("the writer never went idle")
        time.sleep(0.001)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(writer.ident),
                                               ctypes.py_object(Killed))


def _waiting_for_work(thread):
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_filename.endswith("store.py"):
            return frame.f_code.co_name == "_write"
        frame = frame.f_back
    return False
'''


def _metrics(server: ServerProcess, expected: dict[str, float]) -> None:
    """Scrape /metrics until every ``expected`` sample has its value (the counters
    are published once a second)."""
    url = server.wait_for_log(r"metrics on (http://[\d.]+:\d+/metrics)").group(1)
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        samples = dict(line.rsplit(" ", 1) for line in body.splitlines()
                       if line and not line.startswith("#"))
        wrong = {k: samples.get(k) for k, v in expected.items()
                 if samples.get(k) is None or float(samples[k]) != v}
        if not wrong:
            return
        assert time.monotonic() < deadline, f"metrics never reached {expected}: {wrong}"
        time.sleep(0.1)


def _caught_up(op: ChatClient) -> dict[str, Any]:
    """``/stats`` once the writer has finished what was queued (the new writer takes
    over what the dead one left, a moment after the restart notice)."""
    deadline = time.monotonic() + 10
    while True:
        stats = operator_stats(op)
        writes = stats["storage writes"]
        if writes["queued"] == 0 and writes["committed"] >= GOOD_WRITES:
            return stats
        assert time.monotonic() < deadline, f"the store never caught up: {stats}"
        time.sleep(0.05)


def test_bad_writes_and_a_killed_writer_cost_no_chat_line(chatd_server: Start,
                                                           tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "poison.py").write_text(POISON_PLUGIN)
    config = write_config(
        tmp_path / "config.yaml",
        storage={"path": "data/chatd.sqlite3"},
        plugin_dirs=[str(plugins)],
        plugins={"oper": {"password": PASSWORD}},
        metrics={"enabled": True, "port": 0},
    )
    server = chatd_server(config)
    op = parked_operator(server, PASSWORD)
    alice = server.client()
    bob = server.client()
    said = ["line 1", "poison", "line 2", "kill the writer", "line 3"]
    for text in said[:4]:
        alice.send(text)
        bob.expect(rf"^<guest-\d+> {text}$")
    op.expect(r"^\*\*\* .*storage: the writer thread had stopped and was restarted "
              r"\(1 restart so far\)$", timeout=10)
    alice.send(said[4])  # chat goes on, and so does writing
    bob.expect(r"^<guest-\d+> line 3$")

    stats = _caught_up(op)
    assert stats["storage"] == "ok", stats
    assert stats["storage writes"]["rejected"] == 2, stats
    assert stats["storage writes"]["writer restarts"] == 1, stats
    assert stats["rejected writes"] == {"poison": 2}, stats
    _metrics(server, {
        'chatd_storage_rejected_by_owner_total{owner="poison"}': 2,
        "chatd_storage_writer_restarts_total": 1,
    })
    # Written by the log's own thread: wait for each line, then look.
    server.wait_for_log(r"store: a write by poison was dropped: UnicodeEncodeError")
    server.wait_for_log(r"store: a write by poison was dropped: ValueError")
    server.wait_for_log(r"store: the writer thread stopped \(Killed\)")
    log = server.log()
    assert re.search(r"store: a write by poison was dropped: UnicodeEncodeError: .*"
                     r"INSERT INTO poison_notes", log), log
    assert "store: a write by poison was dropped: ValueError: \"a bug in a plugin's write\"" \
        in log, log
    assert "store: the writer thread stopped (Killed)" in log, log

    for client in (op, alice, bob):
        client.close()  # nobody left to say goodbye to: the shutdown takes no time
    assert server.stop() == 0  # a restart on the same file finds every line said
    again = chatd_server(config)
    reader = again.client()
    reader.send("/history 10")
    reader.expect(r"^\*\*\* history of #lobby: the last 5 lines")
    for text in said:
        reader.expect(rf"^\[(?:\d{4}-\d\d-\d\d )?\d\d:\d\d\] <guest-\d+> {text}$")
    reader.close()
    assert again.stop() == 0
    with sqlite3.connect(tmp_path / "data" / "chatd.sqlite3") as db:
        assert [t for (t,) in db.execute("SELECT text FROM history ORDER BY seq")] == said
        assert db.execute("SELECT text FROM poison_notes ORDER BY rowid").fetchall() == [
            ("kept",), ("wakes it",)]
