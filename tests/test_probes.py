"""Probes are invisible: a connection is announced to its rooms only once it is a chat client.

Port scans, HTTP requests and TLS hellos on the chat port leave no line in any
room and no more than one log line a minute; a person who connects is
announced on their first line, or after ``limits.announce_after_seconds``.
"""

from __future__ import annotations

import re
import socket
import ssl
import time

from chatd.testing import InProcessChat, wait_until

ANNOUNCE = {"announce_after_seconds": 2.0}


def test_probes_leave_no_trace_in_rooms_and_are_logged_once_a_minute(chatd_server):
    server = chatd_server(limits=ANNOUNCE)
    watcher = server.client()
    watcher.send("/rooms")  # speaks: announced, and in the room from now on
    watcher.expect(r"^\*\*\* 1 room")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for i in range(100):
        with socket.create_connection(server.address, timeout=5) as http:
            http.sendall(b"GET /probe%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            http.recv(4096)
        raw = socket.create_connection(server.address, timeout=5)
        try:
            with context.wrap_socket(raw, server_hostname="x"):
                pass
        except (ssl.SSLError, OSError):
            pass  # chatd answers a TLS hello with a plain-text line and a close
        finally:
            raw.close()
    for _ in range(3):  # a port scan: connect, close
        socket.create_connection(server.address, timeout=5).close()
    watcher.expect_nothing(3.0)  # past announce_after: nothing was ever announced
    watcher.send("/who")
    watcher.expect(rf"^\*\*\* #lobby has 1 member: {re.escape(watcher.nick)}$")
    server.wait_for_log(r"WARNING .*HTTP request from")  # written by the log's own thread
    server.wait_for_log(r"WARNING .*TLS request from")
    log = server.log()
    assert len(re.findall(r"WARNING .*HTTP request from", log)) == 1, log[-3000:]
    assert len(re.findall(r"WARNING .*TLS request from", log)) == 1, log[-3000:]
    assert "connect id=2 " not in log  # the log plugin records chat clients, not probes


def test_a_person_is_announced_on_their_first_line_or_after_the_delay(chatd_server):
    server = chatd_server(limits=ANNOUNCE)
    watcher = server.client()
    talker = server.client()
    watcher.expect_nothing(0.5)  # not yet
    talker.send("hello")
    watcher.expect_line(f"*** {talker.nick} joined #lobby")  # first, then what it said
    watcher.expect_line(f"<{talker.nick}> hello")
    lurker = server.client()
    started = time.monotonic()
    watcher.expect_line(f"*** {lurker.nick} joined #lobby", timeout=10)
    assert time.monotonic() - started >= 1.5, "announced before announce_after_seconds"
    assert wait_until(lambda: f"connect id=3 nick={lurker.nick}" in server.log(), 5)


def test_whoever_was_never_announced_leaves_no_quit_either():
    with InProcessChat(limits={"announce_after_seconds": 30}) as chat:
        watcher = chat.connect()
        watcher.send("/rooms")
        watcher.lines()
        probe = chat.connect()
        assert not probe.client.announced
        probe.close()
        assert watcher.lines() == []
        person = chat.connect()
        person.send("hi")
        person.close()
        assert watcher.lines() == [
            "*** guest-3 joined #lobby",
            "<guest-3> hi",
            "*** guest-3 quit (connection closed by peer)",
        ]
