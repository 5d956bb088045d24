"""Attacks on issue 19's seams, against real chatd processes and real sockets.

* Another protocol's greeting split across reads (a TLS hello whose first segment is
  one byte, an HTTP request line that arrives slower than the greeting delay) is
  still another protocol's greeting: it never becomes a user.
* A jsonl listener with a password reads the first request as strictly as any other
  (a line nested thousands deep is an error object, not a traceback that leaves the
  connection hanging and stops the accept batch).
* A protocol whose code raises (a plugin's: tests/brokenproto) costs its own
  connection only: closed, its admission slot freed, the server serving everyone else.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest

from chatd.testing import ChatClient

BROKEN_DIR = Path(__file__).resolve().parent / "brokenproto"
#: The production default (the test kit's is 0: docs/testing.md).
GREETING = {"greeting_delay_seconds": 0.25}
PASSWORD = "open sesame 7"


def _client_hello() -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the server says before it closes (every read has the socket's timeout)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@pytest.mark.parametrize("protocol", ["line", "jsonl"])
def test_a_greeting_split_across_reads_never_makes_a_user(chatd_server, protocol):
    server = chatd_server(limits=GREETING, listen=[{"port": 0}, {"port": 0,
                                                                   "protocol": protocol}])
    watcher = server.client()  # guest-1
    port = server.ports[1]
    hello = _client_hello()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as tls_probe, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as http_probe:
        tls_probe.sendall(hello[:1])  # one byte: too short to tell
        http_probe.sendall(b"GET / HT")  # the request line, unfinished
        watcher.expect_nothing(0.8)  # past the greeting delay: nobody joined
        tls_probe.sendall(hello[1:])
        http_probe.sendall(b"TP/1.1\r\nHost: chat.example\r\n\r\n")
        assert b"TLS" in _read_to_end(tls_probe)  # told in the protocol's words, closed
        assert b"HTTP" in _read_to_end(http_probe)
    watcher.send("/who")
    watcher.expect_line("*** #lobby has 1 member: guest-1")
    # Each probe's refusal is logged once its last bytes are read: after the moment a
    # probe made a user would have been logged (the log is written by its own thread).
    server.wait_for_log(r"TLS request from")
    server.wait_for_log(r"HTTP request from")
    assert re.findall(r"connect id=\d+", server.log()) == ["connect id=1"]


def test_a_deeply_nested_first_request_on_a_jsonl_listener_with_a_password(chatd_server):
    server = chatd_server(listen=[{"port": 0},
                                  {"port": 0, "protocol": "jsonl", "password": PASSWORD}])
    bot = server.json_client(welcome=False)
    bot.lines.send_raw(b"[" * 3000 + b"\n")
    bot.expect(type="error", code="password_required")
    other = server.json_client(welcome=False)  # accepted: the accept loop went on
    other.send({"cmd": "pass", "password": PASSWORD})
    other.welcome()
    bot.send({"cmd": "pass", "password": PASSWORD})  # the first one is still served
    bot.welcome()
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("callback", ["__init__", "connection_made", "data_received",
                                      "eof_received", "connection_lost"])
def test_a_protocol_that_raises_costs_its_own_connection_only(chatd_server, callback):
    server = chatd_server(
        plugin_dirs=[str(BROKEN_DIR)],
        per_ip={"max_connections": 3, "connect_rate": 0, "max_unregistered": 0},
        listen=[{"port": 0}, {"port": 0, "protocol": "broken", "fails_in": callback}],
    )
    person = server.client()
    for _ in range(2):  # more than the address may hold at once: each slot is given back
        # Three at once: they are accepted in one batch, which must go on past a failure.
        socks = [socket.create_connection(("127.0.0.1", server.ports[1]), timeout=5)
                 for _ in range(3)]
        for sock in socks:
            with sock:
                sock.sendall(b"hello\n")
                if callback in ("eof_received", "connection_lost"):  # else chatd closes
                    sock.shutdown(socket.SHUT_WR)
                assert b"server full" not in _read_to_end(sock)  # closed, not left open
    person.send("/who")
    person.expect(r"^\*\*\* #lobby has \d+ members?: ")
    with ChatClient((server.host, server.ports[0])) as another:
        another.welcome()
    server.wait_for_log(rf"the broken protocol fails in {callback}")


@pytest.mark.parametrize("program", ["nc", "ncat", "socat", "telnet"])
def test_every_terminal_client_is_welcomed_without_typing_under_the_greeting_delay(
        chatd_server, program):
    """What a terminal client sends on its own when it connects (telnet's negotiation)
    is no line: the greeting delay still begins the session, no Enter needed."""
    server = chatd_server(limits=GREETING)
    person = server.terminal(program)  # reads the welcome (the kit's timeout)
    assert person.nick == "guest-1"


def test_a_protocol_that_cannot_word_a_refusal_still_refuses_each_connection(chatd_server):
    """The acceptor asks the listener's protocol for a refusal's words (here: one
    connection per address); a protocol whose renderer raises gets its peers closed
    without words, each of them, and the accept batch goes on."""
    server = chatd_server(
        plugin_dirs=[str(BROKEN_DIR)],
        per_ip={"max_connections": 1, "connect_rate": 0, "max_unregistered": 0},
        listen=[{"port": 0}, {"port": 0, "protocol": "brokenrefusal",
                              "fails_in": "connection_lost"}],
    )
    with socket.create_connection(("127.0.0.1", server.ports[1]), timeout=5) as held:
        held.sendall(b"hello\n")
        refused = [socket.create_connection(("127.0.0.1", server.ports[1]), timeout=5)
                   for _ in range(3)]
        for sock in refused:
            with sock:
                assert _read_to_end(sock) == b""  # closed (no words), not left waiting
    server.wait_for_log(r"the brokenrefusal protocol cannot word a refusal")
    with ChatClient((server.host, server.ports[0])) as person:
        person.welcome()
