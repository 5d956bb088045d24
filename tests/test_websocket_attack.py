"""The outsider's attack on the ``websocket`` listener: real chatd processes, raw sockets
for what no library will send, and the ``websockets`` client where a real one serves.

Every probe ends the same way: the attacker gets an HTTP status or a close frame with
the code RFC 6455 names (never a traceback, never a session it should not have), and
the server goes on serving everyone else (a watcher on the line listener sees nothing
of it, and the log has no traceback).  Probes that found nothing are kept: they pin
the behaviour down.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from typing import Any

import pytest
from websockets.sync.client import connect

from chatd.protocols.websocket.handshake import MAX_PIPELINED, HttpSide, Respond, origin_allowed
from chatd.testing import rss_bytes, unexpected_tracebacks

TIMEOUT = 5.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
#: The room lines of the slow-tab test.
LINES = 1000
UPGRADE = ("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
           "Sec-WebSocket-Version: 13")
#: Close codes (RFC 6455 7.4.1).
PROTOCOL_ERROR, INVALID_DATA, POLICY, TOO_BIG = 1002, 1007, 1008, 1009


@pytest.fixture
def ws(chatd_server):
    """``ws(**listener_options, limits=..., per_ip=...)`` -> a server whose listener 0 is
    a line one, 1 the websocket one."""
    def start(**options: Any) -> Any:
        sections = {name: options.pop(name) for name in ("limits", "per_ip", "flood", "net")
                    if name in options}
        return chatd_server(
            listen=[{"port": 0}, {"port": 0, "protocol": "websocket", **options}], **sections)
    return start


class Raw:
    """A socket speaking HTTP and WebSocket frames by hand; every read has a timeout."""

    def __init__(self, server: Any, *, source: str | None = None,
                 rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect: the window is agreed at the handshake
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((server.host, server.ports[1]))
        self.host = f"{server.host}:{server.ports[1]}"
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, *lines: str, body: bytes = b"") -> None:
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            assert self._more(), f"EOF in an HTTP head: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    def status(self) -> int:
        return int(self.head().split(b" ", 2)[1])

    def response(self) -> tuple[int, bytes, bytes]:
        """A whole response: its status, head and body (by Content-Length)."""
        head = self.head()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            assert self._more(), "EOF inside a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(head.split(b" ", 2)[1]), head, body

    def upgrade(self, *headers: str) -> str:
        """A valid upgrade; the session's nick (its join of #lobby)."""
        self.request("GET / HTTP/1.1", f"Host: {self.host}", *UPGRADE, *headers)
        assert self.status() == 101
        return str(self.objects_until(lambda o: o["type"] == "join")[-1]["from"])

    def frame_bytes(self, payload: bytes, opcode: int = 0x1, *, fin: bool = True,
                    rsv: int = 0, masked: bool = True, length: int | None = None) -> bytes:
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
        bit = 0x80 if masked else 0
        if n < 126:
            head += bytes([bit | n])
        elif n < 65536:
            head += bytes([bit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([bit | 127]) + struct.pack("!Q", n)
        if not masked:
            return head + payload
        mask = os.urandom(4)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def frame(self, payload: bytes, opcode: int = 0x1, **how: Any) -> None:
        self.send(self.frame_bytes(payload, opcode, **how))

    def say(self, obj: dict[str, Any]) -> None:
        self.frame(json.dumps(obj).encode())

    def next_frame(self) -> tuple[int, bytes]:
        while len(self.buffer) < 2:
            assert self._more(), f"EOF before a frame: {self.buffer!r}"
        first, n, at = self.buffer[0], self.buffer[1] & 0x7F, 2
        assert self.buffer[1] & 0x80 == 0, "a server frame must not be masked"
        if n >= 126:
            size = 2 if n == 126 else 8
            while len(self.buffer) < 2 + size:
                assert self._more()
            n = int.from_bytes(self.buffer[2:2 + size], "big")
            at = 2 + size
        while len(self.buffer) < at + n:
            assert self._more(), "EOF inside a frame"
        payload, self.buffer = self.buffer[at:at + n], self.buffer[at + n:]
        return first & 0x0F, payload

    def objects_until(self, predicate: Any) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while True:
            opcode, payload = self.next_frame()
            assert opcode == 0x1, (opcode, payload)
            objects = [json.loads(line) for line in payload.decode().splitlines()]
            seen.extend(objects)
            if any(predicate(obj) for obj in objects):
                return seen

    def closed_with(self) -> tuple[int, str]:
        """Frames up to the server's close frame: its code and reason; then the EOF."""
        while True:
            opcode, payload = self.next_frame()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0]
                self.eof()
                return code, payload[2:].decode("utf-8", "replace")

    def eof(self) -> None:
        """The server ends the stream (within the read timeout)."""
        while self._more():
            pass

    def close(self) -> None:
        self.sock.close()


def _calm(server: Any, watcher: Any) -> None:
    """The watcher saw no stranger arrive; the server is alive and its log clean."""
    watcher.send("/who")
    watcher.expect(r"#lobby has 1 member: ")
    assert unexpected_tracebacks(server.log()) == [], server.log()[-3000:]


# -- malformed HTTP ----------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), 400),  # a TLS hello
    (b"\x00\xff\xfe\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
])
def test_malformed_requests_get_a_status_and_the_close(ws, data, status):
    server = ws()
    watcher = server.client()
    raw = Raw(server)
    raw.send(data)
    assert raw.status() == status
    raw.eof()
    _calm(server, watcher)


@pytest.mark.parametrize("target", [
    "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
    "//etc/passwd", "/static/../handshake.py", "/handshake.py", "/__init__.py",
    "http://evil.example/", "*", "/index.html/", "/.", "/%00",
])
def test_only_the_pages_own_files_are_served(ws, target):
    """No path reaches a file outside the page's folder, nor its Python beside it."""
    server = ws()
    raw = Raw(server)
    raw.request(f"GET {target} HTTP/1.1", "Host: x")
    status, _, body = raw.response()
    assert status in (400, 404), (target, status)
    assert b"root:" not in body and b"import" not in body


def test_host_twice_is_refused(ws):
    server = ws()
    raw = Raw(server)
    raw.request("GET / HTTP/1.1", f"Host: {raw.host}", "Host: evil.example", *UPGRADE,
                "Origin: http://evil.example")
    assert raw.status() in (400, 403)
    raw.eof()


def test_huge_and_many_headers_are_refused_with_431_without_waiting_for_the_end(ws):
    server = ws()
    watcher = server.client()
    whole = Raw(server)  # one header of 10 KB, sent whole
    whole.request("GET / HTTP/1.1", "Host: x", "X-Big: " + "a" * 10_000)
    assert whole.status() == 431
    whole.eof()
    endless = Raw(server)  # a head that never ends: refused at the limit, not buffered
    endless.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
    assert endless.status() == 431
    endless.eof()
    many = Raw(server)
    many.request("GET / HTTP/1.1", "Host: x", *(f"X-H{i}: v" for i in range(100)))
    assert many.status() == 431
    many.eof()
    _calm(server, watcher)


def test_an_upgrade_with_a_body_is_413_and_http_1_0_is_400(ws):
    server = ws()
    watcher = server.client()
    body = Raw(server)
    body.request("GET / HTTP/1.1", f"Host: {body.host}", *UPGRADE, "Content-Length: 5",
                 body=b"hello")
    assert body.status() == 413
    body.eof()
    chunked = Raw(server)
    chunked.request("GET / HTTP/1.1", f"Host: {chunked.host}", *UPGRADE,
                    "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n")
    assert chunked.status() == 413
    chunked.eof()
    old = Raw(server)
    old.request("GET / HTTP/1.0", f"Host: {old.host}", *UPGRADE)
    assert old.status() == 400
    old.eof()
    _calm(server, watcher)


@pytest.mark.parametrize(("headers", "status"), [
    (("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"), 400),
    (("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
      f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"), 400),
    (("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}"), 426),
    (("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
      "Sec-WebSocket-Version: 8"), 426),
    (("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
      "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"), 426),
    (("Upgrade: websocket", f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 13"), 400),
    (("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: AAAA",
      "Sec-WebSocket-Version: 13"), 400),
])
def test_a_broken_upgrade_is_refused_and_makes_nobody(ws, headers, status):
    server = ws()
    watcher = server.client()
    raw = Raw(server)
    raw.request("GET / HTTP/1.1", f"Host: {raw.host}", *headers)
    assert raw.status() == status
    raw.eof()
    _calm(server, watcher)


def test_junk_pipelined_after_the_upgrade_request_is_a_protocol_error_not_a_request(ws):
    """Bytes after the upgrade are frames: junk there (unmasked, reserved bits) closes the
    new session with 1002, and no second HTTP request is read from it."""
    server = ws()
    watcher = server.client()
    raw = Raw(server)
    raw.request("GET / HTTP/1.1", f"Host: {raw.host}", *UPGRADE,
                body=b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.status() == 101
    code, _ = raw.closed_with()
    assert code == PROTOCOL_ERROR
    assert b"HTTP/1.1 200" not in raw.buffer
    _calm(server, watcher)


# -- Origin tricks -----------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [
    "null",
    "http://{host}.",                        # a trailing dot: another name
    "http://127.0.0.1:1",                    # another port
    "http://127.0.0.1",                      # no port: 80, not the listener's
    "http://evil.example@{host}",            # userinfo: no origin has one
    "http://{host}/path",                    # a path: no origin has one
    "http://{host}, http://evil.example",    # a list: not one origin
    "ftp://{host}",
    "http://{host}:",                        # an empty port
    "http://evil.example#@{host}",
])
def test_origin_tricks_are_refused_with_403(ws, origin):
    server = ws()
    watcher = server.client()
    raw = Raw(server)
    raw.request("GET / HTTP/1.1", f"Host: {raw.host}", *UPGRADE,
                "Origin: " + origin.format(host=raw.host))
    assert raw.status() == 403
    raw.eof()
    _calm(server, watcher)


def test_an_origin_is_scheme_host_and_port_only_in_process():
    """What the browser sends is ``scheme://host[:port]``; anything more is no origin."""
    host = "chat.example.org:8080"
    assert origin_allowed("https://chat.example.org:8080", host, ())
    for forged in ("https://evil.example@chat.example.org:8080",
                   "https://u:p@chat.example.org:8080", "https://chat.example.org:8080/x",
                   "https://chat.example.org:8080?x", "https://chat.example.org:8080#x"):
        assert not origin_allowed(forged, host, ()), forged


def test_origin_twice_is_refused_even_when_one_is_the_sites_own(ws):
    server = ws()
    watcher = server.client()
    raw = Raw(server)
    raw.request("GET / HTTP/1.1", f"Host: {raw.host}", *UPGRADE,
                f"Origin: http://{raw.host}", "Origin: https://evil.example")
    assert raw.status() == 403
    raw.eof()
    listed = ws(origins=["https://chat.example.org"])
    raw = Raw(listed)
    raw.request("GET / HTTP/1.1", f"Host: {raw.host}", *UPGRADE,
                "Origin: https://chat.example.org", "Origin: https://evil.example")
    assert raw.status() == 403
    raw.eof()
    _calm(server, watcher)


def test_the_sites_own_origin_in_capitals_is_still_the_site(ws):
    """Scheme and host are case-insensitive (RFC 6454): the same origin, let in."""
    server = ws()
    raw = Raw(server)
    raw.upgrade(f"Origin: HTTP://{raw.host.upper()}")
    raw.close()


# -- frames ------------------------------------------------------------------------------------


def _session(ws: Any) -> tuple[Any, Any, Raw]:
    server = ws()
    watcher = server.client()
    raw = Raw(server)
    raw.upgrade()
    watcher.expect(r"guest-\d+ joined")
    return server, watcher, raw


@pytest.mark.parametrize(("frame", "code"), [
    (dict(payload=b'{"cmd":"say","text":"x"}', masked=False), PROTOCOL_ERROR),
    (dict(payload=b'{"cmd":"say","text":"x"}', rsv=4), PROTOCOL_ERROR),
    (dict(payload=b'{"cmd":"say","text":"x"}', rsv=1), PROTOCOL_ERROR),
    (dict(payload=b"x", opcode=0x3), PROTOCOL_ERROR),
    (dict(payload=b"x", opcode=0xB), PROTOCOL_ERROR),
    (dict(payload=b"p" * 126, opcode=0x9), PROTOCOL_ERROR),   # a PING over 125 bytes
    (dict(payload=b"p", opcode=0x9, fin=False), PROTOCOL_ERROR),  # a fragmented PING
    (dict(payload=b"x", opcode=0x0), PROTOCOL_ERROR),          # a continuation of nothing
    (dict(payload=b"\xff\xfe", opcode=0x1), INVALID_DATA),      # not UTF-8
    (dict(payload=b'{"text":"\xed\xa0\x80"}', opcode=0x1), INVALID_DATA),  # a surrogate
    (dict(payload=struct.pack("!H", 999), opcode=0x8), PROTOCOL_ERROR),    # bad close code
    (dict(payload=struct.pack("!H", 1005), opcode=0x8), PROTOCOL_ERROR),   # reserved
    (dict(payload=b"\x03", opcode=0x8), PROTOCOL_ERROR),                   # one byte
    (dict(payload=struct.pack("!H", 1000) + b"\xff", opcode=0x8), INVALID_DATA),
])
def test_a_broken_frame_closes_with_its_code_and_the_user_leaves(ws, frame, code):
    server, watcher, raw = _session(ws)
    raw.frame(**frame)
    assert raw.closed_with()[0] == code
    watcher.expect(r"guest-\d+ (left|quit)")
    _calm(server, watcher)


def test_a_ping_flood_from_a_client_that_never_reads_costs_little_output(ws):
    """Each read's PINGs make one PONG (the last; RFC 6455 5.5.3), so a client that
    pings in bulk without reading gets a few PONGs, not one per PING: its output stays
    small (and were it to grow past the soft limit, its input would be held and it
    cut); the others chat on all the while."""
    server = ws(limits={"max_output_bytes": 1 << 20, "output_soft_bytes": 32 << 10,
                        "output_soft_seconds": 1},
                net={"sndbuf_bytes": 4096})
    watcher = server.client()
    raw = Raw(server, rcvbuf=4096)
    raw.upgrade()
    watcher.expect(r"guest-\d+ joined")
    burst = raw.frame_bytes(b"p" * 125, 0x9) * 100
    raw.sock.settimeout(0.5)
    pings = 0
    try:
        for _ in range(2000):  # 26 MB of PINGs
            raw.send(burst)
            pings += 100
    except OSError:
        pass  # held: the server stopped reading it
    other = server.client()
    other.send("still here")
    watcher.expect(r"still here$")
    pongs = 0
    while True:
        try:
            opcode, _ = raw.next_frame()
        except (OSError, AssertionError):  # quiet (all read: the timeout), or cut (EOF)
            break
        if opcode == 0x8:
            break
        pongs += opcode == 0xA  # (a text frame: the error object before a cut)
    assert pings >= 10_000 and pongs * 10 < pings, (pings, pongs)


def test_after_its_close_frame_a_client_is_not_heard(ws):
    _server, watcher, raw = _session(ws)
    raw.send(raw.frame_bytes(struct.pack("!H", 1000) + b"bye", 0x8)
             + raw.frame_bytes(b'{"cmd":"say","text":"after the close"}'))
    assert raw.closed_with()[0] == 1000
    watcher.expect(r"guest-\d+ (quit|left)")
    watcher.expect_nothing()


def test_empty_messages_and_blank_lines_cost_nothing(ws):
    _server, watcher, raw = _session(ws)
    raw.frame(b"")
    raw.frame(b"\n" * 3000)
    raw.frame(b"\r\n\r\n")
    raw.say({"cmd": "say", "text": "after the blanks"})
    watcher.expect(r"> after the blanks$")
    watcher.send("/who")
    watcher.expect(r"#lobby has 2 members")


def test_a_page_and_then_an_upgrade_on_one_connection(ws):
    """Keep-alive: a GET of the page, then the upgrade on the same connection (what a
    client may do); the session begins at the upgrade only."""
    server = ws()
    watcher = server.client()
    raw = Raw(server)
    raw.request("GET / HTTP/1.1", "Host: x")
    assert raw.response()[0] == 200
    watcher.send("/who")
    watcher.expect(r"#lobby has 1 member: ")
    raw.upgrade()
    watcher.expect(r"guest-\d+ joined")


def test_control_frames_between_fragments_are_answered_and_the_message_is_whole(ws):
    _server, watcher, raw = _session(ws)
    raw.frame(b'{"cmd":"say",', fin=False)
    raw.frame(b"are you there", opcode=0x9)
    raw.frame(b'"text":"in three pieces"}', opcode=0x0)
    assert raw.next_frame() == (0xA, b"are you there")
    watcher.expect(r"^<guest-\d+> in three pieces$")


def test_fragments_that_never_end_are_cut_at_the_size_limit_or_the_partial_timeout(ws):
    server = ws(limits={"max_line_bytes": 1024, "partial_line_timeout_seconds": 1})
    watcher = server.client()
    big = Raw(server)
    big.upgrade()
    big.frame(b"x" * 500, fin=False)
    for _ in range(3):  # 2000 bytes in pieces: over 1024 together
        big.frame(b"x" * 500, opcode=0x0, fin=False)
    assert big.closed_with()[0] == TOO_BIG
    # A byte at a time, forever: never over the size, but the message's time adds up
    # from its first piece, whatever follows: cut while it is still trickling.
    trickle = Raw(server)
    trickle.upgrade()
    trickle.frame(b"x", fin=False)
    trickle.sock.settimeout(0.1)
    for _ in range(50):  # 5 s of pieces, five times the timeout
        try:
            trickle.frame(b"x", opcode=0x0, fin=False)
            if not trickle._more() or trickle.buffer:
                break  # the server spoke (its close), or hung up
        except TimeoutError:
            continue
        except OSError:
            break
    else:
        raise AssertionError("a message trickling in pieces was never cut")
    trickle.sock.settimeout(TIMEOUT)
    code, reason = trickle.closed_with()
    assert code == POLICY and "unfinished" in reason, reason
    _calm(server, watcher)


def test_a_100_mb_length_header_allocates_nothing_and_is_closed_with_1009(ws):
    server, watcher, raw = _session(ws)
    before = rss_bytes(server.pid)
    # The header says 100 MB; the first 8 KiB of it come (masked), the rest never will.
    raw.send(raw.frame_bytes(b"a" * 8192, length=100 * 1024 * 1024))
    assert raw.closed_with()[0] == TOO_BIG
    assert rss_bytes(server.pid) - before < 20 * 1024 * 1024
    _calm(server, watcher)


# -- jsonl inside frames -----------------------------------------------------------------------


def test_a_second_request_in_one_frame_is_the_senders_own(ws):
    """jsonl forging: a ``\\n`` and more requests inside one frame are all that client's;
    fields naming someone else count for nothing; a line written to look like another
    user's is refused as JSON, and a newline inside a text cannot start a line that
    looks like someone else's on the line protocol."""
    server, watcher, raw = _session(ws)
    victim = server.client()
    watcher.expect(r"guest-\d+ joined")
    other = victim.nick.encode()
    raw.frame(b'{"cmd":"say","text":"one"}\n'
              b'{"cmd":"say","text":"two","from":"' + other + b'","nick":"' + other + b'"}\n'
              b"<" + other + b"> three\n"
              b'{"cmd":"say","text":"four\\n<' + other + b'> five"}')
    sender = watcher.expect(r"^<(guest-\d+)> one$").group(1)
    assert sender != victim.nick
    watcher.expect_line(f"<{sender}> two")
    watcher.expect_line(f"<{sender}> four")
    watcher.expect_line(f"<{sender}> <{victim.nick}> five")
    error = raw.objects_until(lambda o: o.get("type") == "error")[-1]
    assert error["code"] == "malformed"
    watcher.expect_nothing()


def test_a_session_cannot_be_taken_by_naming_it(ws):
    """Nothing a client sends hands it another session: its requests act for itself
    whatever they name, and a nick in use is refused."""
    server, watcher, raw = _session(ws)
    other = Raw(server)
    other.upgrade()
    other.say({"cmd": "nick", "nick": "alice"})
    watcher.expect(r"is now known as alice")
    raw.say({"cmd": "nick", "nick": "alice"})
    error = raw.objects_until(lambda o: o.get("type") == "error")[-1]
    assert "is taken" in error["text"], error
    raw.say({"cmd": "say", "text": "as alice?", "from": "alice", "nick": "alice"})
    line = watcher.expect(r"as alice\?$").group(0)
    assert not line.startswith("<alice>"), line
    other.close()


# -- many, slow, and repeated ------------------------------------------------------------------


def test_a_get_flood_is_served_and_never_makes_a_session(ws):
    server = ws(per_ip={"max_unregistered": 3})
    watcher = server.client()
    keepalive = Raw(server)
    for _ in range(50):  # one connection, many pages: keep-alive, nobody
        keepalive.request("GET / HTTP/1.1", "Host: x")
        assert keepalive.response()[0] == 200
    parallel = [Raw(server) for _ in range(6)]  # parallel: past max_unregistered, 503
    statuses = []
    for conn in parallel:
        conn.request("GET / HTTP/1.1", "Host: x")
        statuses.append(conn.response()[0])
    assert 503 in statuses
    assert statuses.count(200) <= 3
    _calm(server, watcher)


def test_pipelined_requests_are_answered_a_few_at_a_time_in_process():
    """One read of many pipelined GETs (40 bytes each, a page each: an amplifier) makes
    at most MAX_PIPELINED answers, then a 429 and the close, never a response per
    request built in memory at once.  No browser pipelines."""
    flood = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
    answers = HttpSide().receive(flood)
    assert len(answers) == MAX_PIPELINED + 1
    assert all(isinstance(a, Respond) and a.data.startswith(b"HTTP/1.1 200")
               for a in answers[:-1])
    last = answers[-1]
    assert isinstance(last, Respond) and last.close
    assert last.data.startswith(b"HTTP/1.1 429")


def test_a_pipelined_get_flood_gets_a_few_pages_then_429(ws):
    server = ws()
    watcher = server.client()
    raw = Raw(server)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
    statuses = []
    while True:
        status, _, _ = raw.response()
        statuses.append(status)
        if status != 200:
            break
    assert statuses[-1] == 429 and len(statuses) <= MAX_PIPELINED + 1, statuses
    raw.eof()
    _calm(server, watcher)


def test_slowloris_trickling_bytes_is_cut_at_the_registration_timeout(ws):
    server = ws(limits={"registration_timeout_seconds": 1})
    watcher = server.client()
    raw = Raw(server)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    raw.sock.settimeout(0.2)
    for _ in range(50):  # a header byte every 0.2 s, for ten times the timeout
        try:
            raw.send(b"X")  # every byte is new; none makes it a request
            if not raw._more() or raw.buffer:
                break  # the server spoke (its 408), or hung up
        except TimeoutError:
            continue
        except OSError:
            break
    else:
        raise AssertionError("a request trickling in was never cut")
    raw.sock.settimeout(TIMEOUT)
    assert raw.status() == 408
    _calm(server, watcher)


def test_many_tabs_from_one_address_meet_the_per_address_limit(ws):
    server = ws(per_ip={"max_connections": 3})
    url = f"ws://{server.host}:{server.ports[1]}/"
    with contextlib.ExitStack() as tabs:
        for _ in range(3):  # a real client library, as a browser's tabs
            tab = tabs.enter_context(connect(url, proxy=None, open_timeout=TIMEOUT,
                                             close_timeout=TIMEOUT))
            while not any(json.loads(line).get("self") for line in
                          tab.recv(timeout=TIMEOUT).splitlines()):
                pass  # each a session: its own join of #lobby
        fourth = Raw(server)
        status, head, body = fourth.response()
        assert status == 503 and b"X-Chatd-Error:" in head and b"too many" in body
        fourth.eof()
        other = Raw(server, source="127.0.0.2")  # another address: in
        other.upgrade()


def test_a_tab_that_reads_slowly_gets_whole_frames_and_is_told_what_it_missed(ws):
    """A tab that does not keep up while a room is busy: the server waits for nobody (the
    talker's own requests are answered at once), every frame the slow tab gets is
    whole (lines skipped above the soft limit are skipped whole, never cut inside a
    frame), and it is told exactly how many it missed.  (That a tab reading as it goes
    misses nothing is tests/test_websocket.py's slow-reader test.)"""
    server = ws(limits={"output_soft_bytes": 16 << 10, "max_output_bytes": 4 << 20,
                        "output_soft_seconds": 30},
                net={"sndbuf_bytes": 4096},
                flood={"burst_lines": 2000, "lines_per_second": 2000})
    slow = Raw(server, rcvbuf=4096)
    slow.upgrade()
    talker = server.client()
    for i in range(LINES):  # about 370 KB for the slow tab: far over its kernel buffers
        talker.send(f"{i:04d} " + "x" * 300)
    talker.send("/who")
    talker.expect(r"#lobby has 2 members")
    texts: list[str] = []
    skipped = None
    while skipped is None and not any(text.startswith(f"{LINES - 1:04d} ") for text in texts):
        opcode, payload = slow.next_frame()  # whole frames, each whole JSON lines
        assert opcode == 0x1, (opcode, payload[:200])
        for line in payload.decode().splitlines():
            obj = json.loads(line)
            if obj.get("type") == "message":
                texts.append(obj["text"])
            elif "skipped" in obj.get("text", ""):
                skipped = int(obj["text"].split()[0])
    assert texts == sorted(texts) and len(set(texts)) == len(texts)
    # Told exactly how many it missed (none: it was not slow after all, and not told).
    assert (skipped or 0) == LINES - len(texts) > 0, (skipped, len(texts))
