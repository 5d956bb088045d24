"""TLS listeners: real chatd processes, certificates from trustme, real TLS clients.

TLS and plain clients in one room; the edge-triggered traps (a whole line in
one TLS record with nothing after it, a 1 MiB paste); the handshake timeout
and plaintext on the TLS port; certificate reload on SIGHUP (new connections
get the new certificate, old ones stay; a broken or expired one keeps the
old); client certificates; ``openssl s_client`` and ``ncat --ssl`` beside a
plain client; config errors.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme

from chatd.testing import write_config
from chatd.testing.probes import skip_unless_ci

LINE = r"^<{nick}> {text}$"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _pem(ca: trustme.CA, folder: Path, name: str = "server.pem", **issue) -> Path:
    """A certificate for 127.0.0.1/localhost and its key, in one PEM file."""
    path = folder / name
    ca.issue_cert("127.0.0.1", "localhost", **issue).private_key_and_cert_chain_pem.write_to_path(
        str(path))
    return path


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _tls_server(chatd_server, tmp_path: Path, authority: trustme.CA, sections=None, **tls):
    """A server with a plain listener (0) and a TLS one (1)."""
    cert = _pem(authority, tmp_path)
    config = write_config(tmp_path / "config.yaml", listen=[
        {"port": 0}, {"port": 0, "tls": {"cert": str(cert), "key": str(cert), **tls}},
    ], **(sections or {}))
    return chatd_server(config), config, cert


def _see(client, line: str) -> None:
    client.expect("^" + re.escape(line) + "$")


def test_tls_and_plain_clients_chat_in_one_room(chatd_server, tmp_path, ca):
    server, _, _ = _tls_server(chatd_server, tmp_path, ca)
    secure = server.tls_client(_trusting(ca))
    assert secure.sock.version() in ("TLSv1.2", "TLSv1.3")
    plain = server.client()
    secure.send("/nick alice")
    _see(plain, "*** guest-1 is now known as alice")
    secure.send("hello over tls")
    _see(plain, "<alice> hello over tls")
    plain.send("hello in clear")
    _see(secure, "<guest-2> hello in clear")


def test_X5b_a_whole_line_in_one_record_is_read_with_nothing_after_it(
        chatd_server, tmp_path, ca):
    """X5 (b): a 4,000-byte line in one TLS record, read from the socket 1 KiB a pass,
    is handled with no further input: every byte read is fed to the TLS object and
    that is read until it wants more, so nothing waits inside it unannounced."""
    server, _, _ = _tls_server(chatd_server, tmp_path, ca,
                               sections={"limits": {"read_budget_bytes": 1024}})
    secure = server.tls_client(_trusting(ca))
    plain = server.client()
    long_line = "x" * 4000
    secure.sock.sendall((long_line + "\n").encode())  # one write: one TLS record
    plain.expect(rf"^<guest-1> {long_line}$", timeout=2)


def test_a_1_mib_paste_over_tls_arrives_complete_and_in_order(chatd_server, tmp_path, ca):
    server, _, _ = _tls_server(chatd_server, tmp_path, ca)
    secure = server.tls_client(_trusting(ca))
    plain = server.client()
    lines = [f"paste {i:05d} " + "y" * 90 for i in range(10_000)]
    secure.sock.sendall("".join(line + "\n" for line in lines).encode())
    for line in lines:
        plain.expect(rf"^<guest-1> {line}$", timeout=10)


class _CountingTlsClient:
    """A TLS client on memory BIOs that counts the bytes on the wire and the records."""

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.wire = b""  # every byte received after the handshake
        self.plain = b""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._pump(record=False)
        self._send()

    def _send(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _pump(self, *, record: bool = True) -> None:
        self._send()
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        if record:
            self.wire += data
        self.incoming.write(data)

    def read_until(self, marker: bytes) -> None:
        while marker not in self.plain:
            try:
                self.plain += self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._pump()

    def records(self) -> int:
        """TLS records in ``wire`` (each starts with a 5-byte header holding its length)."""
        count, at = 0, 0
        while at + 5 <= len(self.wire):
            at += 5 + int.from_bytes(self.wire[at + 3:at + 5], "big")
            count += 1
        return count


def test_a_tick_of_messages_is_encrypted_at_once_not_one_record_each(
        chatd_server, tmp_path, ca):
    """200 messages for one TLS reader in one tick reach it in a few records (the flush
    encrypts the tick's output at once), not 200: counted on the reader's wire."""
    server, _, _ = _tls_server(chatd_server, tmp_path, ca)
    reader = _CountingTlsClient((server.host, server.ports[1]), _trusting(ca))
    reader.read_until(b"Type /help for commands.\n")
    reader.wire, reader.plain = b"", b""
    sender = server.client()
    sender.send("/who")  # the reader is there (and the sender's join is behind us)
    sender.expect(r"^\*\*\* #lobby has 2 member")
    reader.read_until(b"joined #lobby\n")
    reader.wire, reader.plain = b"", b""
    # Private messages: each is its own write to the reader, all in one tick.
    sender.send_raw("".join(f"/msg guest-1 burst {i:03d}\n" for i in range(200)).encode())
    reader.read_until(b"burst 199\n")
    assert reader.plain.count(b"*guest-2* burst") == 200
    assert reader.records() <= 10, f"{reader.records()} TLS records for one tick of 200 messages"


def test_X5a_a_silent_connection_is_closed_at_the_handshake_timeout_and_never_seen(
        chatd_server, tmp_path, ca):
    server, _, _ = _tls_server(chatd_server, tmp_path, ca, handshake_timeout_seconds=1.0)
    watcher = server.client()
    silent = socket.create_connection((server.host, server.ports[1]), timeout=5)
    started = time.monotonic()
    assert silent.recv(100) == b""  # closed by the server, nothing said
    assert 0.8 <= time.monotonic() - started < 4
    watcher.send("/who")
    _see(watcher, "*** #lobby has 1 member: guest-1")
    watcher.expect_nothing(0.2)


def test_X5c_plaintext_on_the_tls_port_is_told_and_closed_without_a_traceback(
        chatd_server, tmp_path, ca):
    """Someone typing into the TLS port with plain nc is told what the port wants, at
    once (not at the handshake timeout); a broken hello is closed too; no traceback."""
    server, _, _ = _tls_server(chatd_server, tmp_path, ca)
    for data in (b"hello\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection((server.host, server.ports[1]), timeout=5) as sock:
            sock.sendall(data)
            started = time.monotonic()
            said = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(4096):
                    said += chunk
            assert said == b"! this port speaks TLS: connect with ncat --ssl, openssl s_client " \
                           b"or socat OPENSSL:...\n"
            assert time.monotonic() - started < 2
    with socket.create_connection((server.host, server.ports[1]), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05junk!")  # a handshake record that is not one
        with contextlib.suppress(ConnectionResetError):
            while sock.recv(4096):
                pass
    plain = server.client()
    plain.send("/who")
    _see(plain, "*** #lobby has 1 member: guest-1")  # none of them became a client
    # The closes are logged by the log's own thread: wait for the lines, then look.
    server.wait_for_log(r"tls_plaintext")
    server.wait_for_log(r"tls_error")
    assert "Traceback" not in server.log()


def test_quit_over_tls_says_goodbye_and_closes_cleanly(chatd_server, tmp_path, ca):
    server, _, _ = _tls_server(chatd_server, tmp_path, ca)
    secure = server.tls_client(_trusting(ca))
    secure.send("/quit bye")
    assert secure.expect_eof()[-1] == "*** Goodbye."  # close_notify, then EOF: no ragged end


def _served_certificate(port: int, ca: trustme.CA) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            _trusting(ca).wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.getpeercert(binary_form=True)


def test_sighup_loads_a_new_certificate_for_new_connections_old_ones_stay(
        chatd_server, tmp_path, ca):
    server, _, cert = _tls_server(chatd_server, tmp_path, ca)
    port = server.ports[1]
    before = _served_certificate(port, ca)
    old = server.tls_client(_trusting(ca))
    _pem(ca, tmp_path, "new.pem")
    shutil.copy(tmp_path / "new.pem", cert)
    os.kill(server.pid, signal.SIGHUP)
    server.wait_for_log(r"TLS certificate reloaded")
    after = _served_certificate(port, ca)
    assert after != before
    old.send("/who")  # the old connection goes on with its session
    old.expect(r"^\*\*\* #lobby has \d members?")


@pytest.mark.parametrize("broken", ["expired", "garbage", "missing"])
def test_a_broken_certificate_on_reload_keeps_the_running_one(chatd_server, tmp_path, ca,
                                                               broken):
    server, _, cert = _tls_server(chatd_server, tmp_path, ca)
    port = server.ports[1]
    before = _served_certificate(port, ca)
    if broken == "expired":
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
        _pem(ca, tmp_path, "old.pem", not_before=past - datetime.timedelta(days=30),
             not_after=past)
        shutil.copy(tmp_path / "old.pem", cert)
        why = "expired"
    elif broken == "garbage":
        cert.write_text("not a certificate\n")
        why = "not a certificate"
    else:
        cert.unlink()
        why = "no such file"
    os.kill(server.pid, signal.SIGHUP)
    # The whole reload is refused (issue 18: all or nothing), naming the listener.
    server.wait_for_log(r"reload failed, keeping the running config and plugins: "
                        rf"listen\[1\]\.tls: .*{why}")
    assert _served_certificate(port, ca) == before


def test_client_certificates_when_verify_clients_is_on(chatd_server, tmp_path, ca):
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    server, _, _ = _tls_server(chatd_server, tmp_path, ca, ca=str(tmp_path / "ca.pem"),
                               verify_clients=True)
    try:  # TLS 1.3 finishes the client's side first: the refusal comes at the first read
        lines = server.tls_client(_trusting(ca), welcome=False).expect_eof()
    except (ssl.SSLError, ConnectionResetError):
        lines = []
    assert lines == [], "a client without a certificate was let in"
    server.wait_for_log(r"tls error: peer_did_not_return_a_certificate")
    with_cert = _trusting(ca)
    ca.issue_cert("bot@example.org").configure_cert(with_cert)
    bot = server.tls_client(with_cert)
    bot.send("/who")
    _see(bot, "*** #lobby has 1 member: guest-1")


def test_openssl_s_client_and_ncat_ssl_talk_with_a_plain_client(chatd_server, tmp_path, ca):
    for tool in ("openssl", "ncat"):
        if shutil.which(tool) is None:
            skip_unless_ci(f"{tool} is not installed")
    server, _, _ = _tls_server(chatd_server, tmp_path, ca)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    plain = server.client()
    port = str(server.ports[1])
    commands = {
        "openssl": ["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{port}",
                    "-CAfile", str(ca_file), "-verify_return_error"],
        "ncat": ["ncat", "--ssl", "--ssl-verify", "--ssl-trustfile", str(ca_file),
                 "localhost", port],
    }
    for name, command in commands.items():
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"/nick via{name}\nhello from {name}\n".encode())
            proc.stdin.flush()
            plain.expect(rf"^<via{name}> hello from {name}$")
            plain.send(f"welcome {name}")
            deadline = time.monotonic() + 5
            seen = b""
            while b"welcome " + name.encode() not in seen and time.monotonic() < deadline:
                seen += os.read(proc.stdout.fileno(), 4096)  # the pipe: blocks until data
            assert f"<guest-1> welcome {name}".encode() in seen
        finally:
            proc.kill()
            proc.wait(5)


def _s_client(port: int, ca_file: Path) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` as a person runs it, reading until the server closes."""
    if shutil.which("openssl") is None:
        skip_unless_ci("openssl is not installed")
    return subprocess.run(
        ["openssl", "s_client", "-quiet", "-ign_eof", "-connect", f"127.0.0.1:{port}",
         "-CAfile", str(ca_file), "-verify_return_error"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize(("limits", "why"), [
    ({"per_ip": {"max_connections": 1}}, "! too many connections from your address (max 1)"),
    ({"limits": {"max_clients": 1}}, "! server full (max 1 client); try again later"),
], ids=["per-address", "server-full"])
def test_a_refusal_on_the_tls_port_is_said_inside_tls(chatd_server, tmp_path, ca, limits, why):
    """A refused TLS client finishes its handshake and reads why; it never sees plaintext
    (which openssl reports as "wrong version number")."""
    server, _, _ = _tls_server(chatd_server, tmp_path, ca, sections=limits)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    holder = server.tls_client(_trusting(ca))  # takes the one place
    result = _s_client(server.ports[1], ca_file)
    assert why in result.stdout.splitlines(), (result.stdout, result.stderr)
    assert "wrong version number" not in result.stderr, result.stderr
    holder.send("/who")
    _see(holder, f"*** #lobby has 1 member: {holder.nick}")  # the refused one never was
    assert "Traceback" not in server.log()


def test_a_refusal_behind_a_proxy_header_is_said_inside_tls_too(chatd_server, tmp_path, ca):
    """Through a PROXY header the refusal comes after the header: still inside TLS."""
    from chatd.transport.proxy import v2_header

    cert = _pem(ca, tmp_path)
    config = write_config(tmp_path / "config.yaml", per_ip={"max_connections": 1}, listen=[
        {"port": 0},
        {"port": 0, "proxy_protocol": True, "trusted_proxies": ["127.0.0.0/8"],
         "tls": {"cert": str(cert), "key": str(cert)}},
    ])
    server = chatd_server(config)

    def through_the_proxy() -> ssl.SSLSocket:
        raw = socket.create_connection((server.host, server.ports[1]), timeout=5)
        raw.sendall(v2_header(("203.0.113.50", 6000), ("127.0.0.1", server.ports[1])))
        return _trusting(ca).wrap_socket(raw, server_hostname="localhost")

    with through_the_proxy() as first, through_the_proxy() as second:
        assert first.recv(4096).startswith(b"*** Welcome to chatd")
        said = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := second.recv(4096):
                said += chunk
        assert said == b"! too many connections from your address (max 1)\n"


def test_refusals_past_the_bound_get_a_tls_alert_not_plaintext(chatd_server, tmp_path, ca):
    """Refusing stays cheap under a flood: past REFUSALS_AT_ONCE refused connections
    held for their handshake, a refused TLS client gets a TLS alert at once."""
    from chatd.listeners import REFUSALS_AT_ONCE

    server, _, _ = _tls_server(chatd_server, tmp_path, ca,
                               sections={"per_ip": {"max_connections": 1}})
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    holder = server.tls_client(_trusting(ca))
    silent = [socket.create_connection((server.host, server.ports[1]), timeout=5)
              for _ in range(REFUSALS_AT_ONCE)]  # refused, and never finishing a handshake
    try:
        holder.send("/who")  # a round trip: every one of them has been accepted by now
        _see(holder, f"*** #lobby has 1 member: {holder.nick}")
        result = _s_client(server.ports[1], ca_file)
        assert "alert access denied" in result.stderr, result.stderr
        assert "wrong version number" not in result.stderr, result.stderr
    finally:
        for sock in silent:
            sock.close()


def _connecting_line(program: str) -> str:
    """The line of docs/tls.md's "Connecting" block that runs ``program``, sans comment."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "tls.md").read_text()
    block = re.search(r"## Connecting\n\n```sh\n(.*?)```", doc, re.DOTALL)
    assert block, "docs/tls.md lost its Connecting block"
    lines = [line.split("#")[0].strip() for line in block.group(1).splitlines()
             if line.startswith(program + " ")]
    assert lines, f"docs/tls.md shows no {program} line"
    return lines[-1]


def test_the_socat_line_in_the_docs_is_one_a_person_can_type_into(chatd_server, tmp_path, ca):
    """docs/tls.md's socat line, run on a terminal (pexpect's pty) the way a person does:
    the terminal's line editing (DEL erases), Enter sends a line, /quit leaves."""
    import pexpect

    if shutil.which("socat") is None:
        skip_unless_ci("socat is not installed")
    server, _, _ = _tls_server(chatd_server, tmp_path, ca)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    line = _connecting_line("socat").replace("chat.example.org", "localhost")
    argv = line.replace("7789", str(server.ports[1])).split()
    argv[-1] += f",cafile={ca_file}"  # a private CA, as the doc says
    watcher = server.client()
    child = pexpect.spawn(argv[0], argv[1:], timeout=10)
    try:
        child.expect(rb"\*\*\* Welcome to chatd, (\S+)\.")
        nick = child.match.group(1).decode()
        child.send(b"helo\x7flo from socat\r")  # a typo erased with DEL, then Enter
        _see(watcher, f"<{nick}> hello from socat")
        watcher.send("hi socat")
        child.expect(rf"<{watcher.nick}> hi socat".encode())
        child.send(b"/quit\r")
        child.expect(rb"\*\*\* Goodbye\.")
        child.expect(pexpect.EOF)  # back at the shell
    finally:
        child.terminate(force=True)


def test_a_bad_tls_section_is_a_config_error(tmp_path, ca):
    cert = _pem(ca, tmp_path)
    cases = {
        "listen[1].tls: cannot read": {"cert": str(tmp_path / "nope.pem"), "key": str(cert)},
        "TLS needs `key`": {"cert": str(cert)},
    }
    for message, tls in cases.items():
        config = write_config(tmp_path / "config.yaml", listen=[{"port": 0},
                                                               {"port": 0, "tls": tls}])
        result = subprocess.run(
            [sys.executable, "-m", "chatd", "--config", str(config), "--check-config"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 2, result
        assert message in result.stderr, result.stderr
