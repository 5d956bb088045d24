"""A session begins when the protocol says so: real chatd processes, real sockets.

An HTTP ``GET /``, a TLS probe and a half-finished TLS handshake on every kind of
listener (line and jsonl, plain and TLS) never make a user: no presence (``/who``,
``/whois``), no join in any room, no connect line from the *log* plugin (whose
``chatd_client_connect`` hook writes it).  A person at ``nc`` is still welcomed
without typing anything (the greeting delay), and the listener password works for
line and jsonl, is never logged, and wrong ones are limited per address.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from chatd.testing import write_config

#: The production default, set here because the test kit's is 0 (docs/testing.md).
GREETING = {"greeting_delay_seconds": 0.25}
PASSWORD = "open sesame 7"
OPER = "operator pw"


def _pem(folder: Path) -> Path:
    path = folder / "server.pem"
    trustme.CA().issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem \
        .write_to_path(str(path))
    return path


def _untrusting() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything the server says before it closes (every read has the socket's timeout)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _http_get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: chat.example\r\n\r\n")
        return _read_to_end(sock)


def _http_get_inside_tls(port: int) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with _untrusting().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: chat.example\r\n\r\n")
        data = b""
        try:
            while chunk := tls.recv(4096):
                data += chunk
        except (ssl.SSLError, OSError):
            pass
        return data


def _tls_probe(port: int) -> None:
    """A TLS client hello on a plain port: chatd answers in plain text and closes."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        with _untrusting().wrap_socket(raw, server_hostname="localhost"):
            pass
    except (ssl.SSLError, OSError):
        pass
    finally:
        raw.close()


def _half_handshake(port: int) -> socket.socket:
    """Send a client hello, read the server's first flight, and go no further: the
    socket stays open, mid-handshake, for the caller to close."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = _untrusting().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(outgoing.read())
    assert sock.recv(4096)[:1] == b"\x16"  # the server hello: the server is mid-handshake
    return sock


def test_http_tls_probes_and_half_handshakes_on_every_listener_never_make_a_user(
        chatd_server, tmp_path):
    cert = str(_pem(tmp_path))
    tls = {"cert": cert, "key": cert, "handshake_timeout_seconds": 30}
    server = chatd_server(limits=GREETING, listen=[
        {"port": 0}, {"port": 0, "protocol": "jsonl"},
        {"port": 0, "tls": tls}, {"port": 0, "protocol": "jsonl", "tls": tls},
    ])
    watcher = server.client()  # welcomed after the greeting delay: guest-1, in #lobby
    assert watcher.nick == "guest-1"
    line, jsonl, line_tls, jsonl_tls = server.ports
    for port in (line, jsonl):
        assert b"HTTP" in _http_get(port)  # told, in the protocol's words, and closed
        _tls_probe(port)
    for port in (line_tls, jsonl_tls):
        _http_get(port)  # plain text on the TLS port
        _http_get_inside_tls(port)
    halfway = [_half_handshake(port) for port in (line_tls, jsonl_tls)]
    try:
        # Longer than the greeting delay: a connection made a user would have joined
        # #lobby by now (joins are announced at once in the tests).
        watcher.expect_nothing(1.0)
        watcher.send("/who")
        watcher.expect_line("*** #lobby has 1 member: guest-1")
        for n in range(2, 5):
            watcher.send(f"/whois guest-{n}")
            watcher.expect_line(f"! no such nick: guest-{n}")
    finally:
        for sock in halfway:
            sock.close()
    server.wait_for_log(r"connect id=1 ")  # the log plugin writes from its own thread
    log = server.log()
    assert re.findall(r"connect id=\d+", log) == ["connect id=1"], log[-3000:]


def test_a_netcat_user_is_welcomed_without_typing_anything(chatd_server):
    server = chatd_server(limits=GREETING)
    person = server.terminal("nc")  # reads the welcome (timeout: the kit's default)
    assert person.nick == "guest-1"
    person.send("/who")
    person.expect_line("*** #lobby has 1 member: guest-1")


def test_a_first_line_sent_at_once_is_the_sessions_first_request(chatd_server):
    server = chatd_server(limits={"greeting_delay_seconds": 2},  # the ceiling
                          listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}])
    person = server.client(welcome=False)
    person.send("/nick alice")  # long before the delay: the line begins the session
    person.expect_line("*** Welcome to chatd, guest-1. You are in #lobby. Type /help for "
                       "commands.")
    person.expect_line("*** guest-1 is now known as alice")
    bot = server.json_client(welcome=False)
    bot.send({"cmd": "nick", "nick": "robot", "id": "n1"})
    bot.expect(type="notice", text="Welcome to chatd, guest-2. You are in #lobby. Type "
               "/help for commands.")
    bot.expect(type="nick", new="robot", re="n1")


# -- the listener password ---------------------------------------------------------------------


def test_the_listener_password_for_line_and_jsonl_from_the_environment(chatd_server):
    server = chatd_server(env={"CHATD_TEST_LISTEN_PASSWORD": PASSWORD}, listen=[
        {"port": 0, "password": "${CHATD_TEST_LISTEN_PASSWORD}"},
        {"port": 0, "protocol": "jsonl", "password": "${CHATD_TEST_LISTEN_PASSWORD}"},
    ])
    person = server.client(welcome=False)
    person.expect_line("*** This server asks for a password: type it and press Enter.")
    person.send("open sesame")
    person.expect_line("! wrong password")
    person.send(PASSWORD)
    person.welcome()
    assert person.nick == "guest-1"
    nobody = server.client(welcome=False)  # gives no password: nobody
    nobody.expect_line("*** This server asks for a password: type it and press Enter.")
    bot = server.json_client(welcome=False)
    bot.send({"cmd": "who", "id": "w"})
    bot.expect(type="error", code="password_required")
    bot.send({"cmd": "pass", "password": PASSWORD})
    bot.welcome()
    assert bot.nick == "guest-2"
    person.expect_line("*** guest-2 joined #lobby")
    person.send("/who")
    person.expect_line("*** #lobby has 2 members: guest-1, guest-2")
    server.wait_for_log(r"connect id=2 ")  # the log plugin writes from its own thread
    log = server.log()
    assert PASSWORD not in log and "open sesame" not in log
    assert re.findall(r"connect id=\d+", log) == ["connect id=1", "connect id=2"]


def test_wrong_passwords_are_limited_per_address_and_counted(chatd_server, tmp_path):
    secret = tmp_path / "listen-password"
    secret.write_text(PASSWORD + "\n")
    config = write_config(tmp_path / "config.yaml", plugins={"oper": {"password": OPER}},
                          listen=[{"port": 0, "password_file": str(secret)}])
    server = chatd_server(config)
    op = server.client(welcome=False, source="127.0.0.2")
    op.send(PASSWORD)
    op.welcome()
    op.send(f"/oper {OPER}")
    op.expect_line("*** you are now an operator")
    guesser = server.client(welcome=False, source="127.0.0.3")
    guesser.expect_line("*** This server asks for a password: type it and press Enter.")
    for _ in range(2):
        guesser.send("guess")
        guesser.expect_line("! wrong password")
    guesser.send("guess")
    guesser.expect_line("! too many wrong passwords from your address; try again later")
    guesser.expect_eof()
    again = server.client(welcome=False, source="127.0.0.3")  # the right one, too late
    again.send(PASSWORD)
    again.expect_line("*** This server asks for a password: type it and press Enter.")
    again.expect_line("! too many wrong passwords from your address; try again later")
    again.expect_eof()
    other = server.client(welcome=False, source="127.0.0.4")  # another address: let in
    other.send(PASSWORD)
    other.welcome()
    op.send("/stats")
    report = op.expect(r"^\*\*\* refused: .*").group(0)
    assert "password_limit 1" in report and "wrong_password 3" in report, report
    server.wait_for_log(r"connect id=\d+ nick=\S+ peer=127\.0\.0\.4:")  # after the guesses
    assert PASSWORD not in server.log()


def test_connections_that_never_give_the_password_hold_slots_and_make_room_under_pressure(
        chatd_server):
    """Nobody yet is still a connection: at 90 % of max_clients the longest-silent one
    past the registration timeout is closed (and told why), even with no chat client
    among them."""
    server = chatd_server(limits={"max_clients": 5, "registration_timeout_seconds": 1.0},
                          listen=[{"port": 0, "password": PASSWORD}])
    person = server.client(welcome=False, source="127.0.0.2")
    person.send(PASSWORD)
    person.welcome()
    person.send("/who")  # speaks: registered, never the one cut
    person.expect_line("*** #lobby has 1 member: guest-1")
    waiting = [server.client(welcome=False, source="127.0.0.3") for _ in range(4)]
    for client in waiting:
        client.expect_line("*** This server asks for a password: type it and press Enter.")
    told = waiting[0].expect_eof(timeout=10)
    assert told == ["! registration timeout: say something within 1 s"], told
    person.send("/who")
    person.expect_line("*** #lobby has 1 member: guest-1")
