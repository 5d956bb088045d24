"""The ``websocket`` listener against real chatd processes, with a real WebSocket client
library (``websockets``, its sync client: every receive has a timeout), raw sockets for
what a library will not send, and in-process unit tests of the HTTP side
(:mod:`chatd.protocols.websocket.handshake`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import weakref
from typing import Any

import pytest
import trustme
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

TIMEOUT = 5.0
#: The config sections ``ws_server`` takes beside the listener's options.
SECTIONS = ("limits", "net", "flood", "per_ip")


@pytest.fixture
def ws_server(chatd_server):
    """``ws_server(**listener_options, limits=..., flood=...)`` -> (server, ws:// URL of
    its websocket listener); listener 0 is a line listener, 1 the websocket one."""
    def start(**options: Any) -> Any:
        sections = {name: options.pop(name) for name in SECTIONS if name in options}
        server = chatd_server(
            listen=[{"port": 0}, {"port": 0, "protocol": "websocket", **options}], **sections)
        return server, f"ws://{server.host}:{server.ports[1]}/"
    return start


def recv_json(ws: Any, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """One text frame: its jsonl lines, parsed (a frame holds one or more)."""
    frame = ws.recv(timeout=timeout)
    assert isinstance(frame, str) and frame.endswith("\n")
    return [json.loads(line) for line in frame.splitlines()]


#: Objects received in a frame after the one ``until`` returned, per client: next time.
_PENDING: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


def until(ws: Any, predicate: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Read objects until one satisfies ``predicate``; that one (those after it in its
    frame wait for the next call: nothing is skipped)."""
    pending = _PENDING.setdefault(ws, [])
    while True:
        while pending:
            obj = pending.pop(0)
            if predicate(obj):
                return obj
        pending.extend(recv_json(ws, timeout))


def test_upgrade_begins_a_session_and_jsonl_crosses_both_ways(ws_server):
    server, url = ws_server()
    with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        welcome = until(ws, lambda o: o["type"] == "join")
        assert welcome["room"] == "#lobby" and welcome.get("self") is True
        person = server.client()
        person.send("hello from nc")
        said = until(ws, lambda o: o["type"] == "message")
        assert (said["from"], said["text"]) == (person.nick, "hello from nc")
        ws.send(json.dumps({"cmd": "say", "text": "hello from a browser"}))
        person.expect(rf"^<{welcome['from']}> hello from a browser$")


# -- a raw client, for what a library will not do -------------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example; its accept is s3pPLMBiTxaQ9kYGzzhZRbK+xOo=


class RawWs:
    """A WebSocket client on a plain socket: the upgrade by hand, masked frames out,
    frames in parsed (opcode, payload), every read with a timeout."""

    def __init__(self, address: tuple[str, int], *, headers: tuple[str, ...] = (),
                 upgrade: bool = True, tls: ssl.SSLContext | None = None,
                 rcvbuf: int | None = None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect: the window is agreed at the handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        self.sock = tls.wrap_socket(sock, server_hostname="localhost") if tls else sock
        self.sock.settimeout(TIMEOUT)
        self.buffer = b""
        self.head = b""
        if upgrade:
            self.upgrade(headers)

    def request(self, *lines: str) -> None:
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def upgrade(self, headers: tuple[str, ...] = ()) -> None:
        address, port = self.sock.getpeername()[:2]
        host = f"{address}:{port}"
        self.request("GET / HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
                     "Connection: Upgrade", f"Sec-WebSocket-Key: {KEY}",
                     "Sec-WebSocket-Version: 13", *headers)
        self.head = self.http_head()
        assert self.head.startswith(b"HTTP/1.1 101"), self.head
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in self.head

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def http_head(self) -> bytes:
        """Everything up to the end of an HTTP response head (the body stays buffered)."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._more(), f"EOF in an HTTP head: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head + b"\r\n\r\n"

    def response(self) -> tuple[bytes, bytes]:
        """An HTTP response: its head and its body (by Content-Length)."""
        head = self.http_head()
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if head.startswith(b"HTTP/1.1 304"):
            length = 0
        while len(self.buffer) < length:
            assert self._more(), "EOF inside a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return head, body

    def send_frame(self, payload: bytes, opcode: int = 0x1, *, fin: bool = True) -> None:
        mask = os.urandom(4)
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_json(self, obj: dict[str, Any]) -> None:
        self.send_frame(json.dumps(obj).encode())

    def frame(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload); server frames are never masked."""
        while len(self.buffer) < 2:
            assert self._more(), "EOF before a frame"
        first, second = self.buffer[0], self.buffer[1]
        assert second & 0x80 == 0, "a server frame must not be masked"
        n, at = second & 0x7F, 2
        if n == 126:
            while len(self.buffer) < 4:
                assert self._more()
            n, at = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif n == 127:
            while len(self.buffer) < 10:
                assert self._more()
            n, at = struct.unpack("!Q", self.buffer[2:10])[0], 10
        while len(self.buffer) < at + n:
            assert self._more(), "EOF inside a frame"
        payload, self.buffer = self.buffer[at:at + n], self.buffer[at + n:]
        assert first & 0x80, "fragmented server frame"
        return first & 0x0F, payload

    def objects_until(self, predicate: Any) -> list[dict[str, Any]]:
        """Text frames' jsonl objects up to the end of the frame holding the first that
        matches (a frame holds one or more lines, each a jsonl object)."""
        seen: list[dict[str, Any]] = []
        while True:
            opcode, payload = self.frame()
            assert opcode == 0x1, (opcode, payload)
            objects = [json.loads(line) for line in payload.decode().splitlines()]
            seen.extend(objects)
            if any(predicate(obj) for obj in objects):
                return seen

    def close_frame(self) -> tuple[int, str, list[dict[str, Any]]]:
        """Read up to the server's close frame: its code, reason and the objects before."""
        before: list[dict[str, Any]] = []
        while True:
            opcode, payload = self.frame()
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode(), before
            if opcode == 0x1:
                before.extend(json.loads(line) for line in payload.decode().splitlines())

    def eof(self) -> bytes:
        """Read to the end of the stream (what was left); fails on a timeout."""
        rest = self.buffer
        while True:
            data = self.sock.recv(65536)
            if not data:
                return rest
            rest += data

    def close(self) -> None:
        self.sock.close()


def address_of(server: Any) -> tuple[str, int]:
    return server.host, server.ports[1]


def welcomed(raw: RawWs) -> str:
    """Read a fresh session's welcome up to its join of #lobby; its nick."""
    return str(raw.objects_until(lambda o: o["type"] == "join")[-1]["from"])


# -- the handshake ------------------------------------------------------------------------------


def test_an_origin_of_another_site_is_refused_with_403_and_no_user_is_made(ws_server):
    server, url = ws_server()
    person = server.client()
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin="https://evil.example", open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403
    assert b"not allowed" in refused.value.response.body
    person.expect_nothing()  # nobody was made of it: no join
    # Its own site (the Host the request names) is let in, scheme aside.
    own = f"http://{server.host}:{server.ports[1]}"
    with connect(url, origin=own, open_timeout=TIMEOUT) as ws:
        until(ws, lambda o: o["type"] == "join")
    person.expect(r"guest-\d+ joined")  # the one that was let in


def test_listed_origins_and_the_star(ws_server):
    server, url = ws_server(origins=["https://chat.example.org"])
    with connect(url, origin="https://chat.example.org", open_timeout=TIMEOUT) as ws:
        until(ws, lambda o: o["type"] == "join")
    own = f"http://{server.host}:{server.ports[1]}"
    with pytest.raises(InvalidStatus) as refused:  # listed: only the list
        connect(url, origin=own, open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 403
    _, anyone = ws_server(origins=["*"])
    with connect(anyone, origin="https://evil.example", open_timeout=TIMEOUT) as ws:
        until(ws, lambda o: o["type"] == "join")


def test_a_get_of_the_page_never_becomes_a_user(ws_server):
    server, _ = ws_server()
    person = server.client()
    web = RawWs(address_of(server), upgrade=False)
    web.request("GET / HTTP/1.1", "Host: x")
    head, body = web.response()
    assert head.startswith(b"HTTP/1.1 200") and b"<html" in body
    # Kept alive for the next request, and still nobody: no join, no presence.
    web.request("GET /index.html HTTP/1.1", "Host: x")
    assert web.response()[0].startswith(b"HTTP/1.1 200")
    person.send("/who")
    person.expect(r"#lobby has 1 member: ")
    person.expect_nothing()
    web.close()


def test_the_page_is_served_with_its_etag_and_security_headers(ws_server):
    server, _ = ws_server()
    web = RawWs(address_of(server), upgrade=False)
    web.request("GET / HTTP/1.1", "Host: x")
    raw_head, body = web.response()
    head = raw_head.decode()
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    csp = headers["Content-Security-Policy"]
    for rule in ("default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'"):
        assert rule in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert b"<html" in body and len(body) == int(headers["Content-Length"])
    etag = headers["ETag"]
    web.request("GET / HTTP/1.1", "Host: x", f"If-None-Match: {etag}")
    again = web.response()[0].decode()
    assert again.startswith("HTTP/1.1 304") and f"ETag: {etag}" in again
    web.request("GET / HTTP/1.1", "Host: x", 'If-None-Match: "stale"', "Connection: close")
    assert web.http_head().startswith(b"HTTP/1.1 200")
    web.eof()  # Connection: close is honoured


def test_other_requests_are_refused_with_a_status_and_closed(ws_server):
    server, _ = ws_server()
    for request, status in [
        (("POST / HTTP/1.1", "Host: x", "Content-Length: 0"), b"405"),
        (("GET /secret HTTP/1.1", "Host: x"), b"404"),
        (("GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
          f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 8"), b"426"),
        (("GET / HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade",
          "Sec-WebSocket-Key: short", "Sec-WebSocket-Version: 13"), b"400"),
        (("NOT HTTP AT ALL",), b"400"),
    ]:
        web = RawWs(address_of(server), upgrade=False)
        web.request(*request)
        head = web.http_head()
        assert head.split(b" ")[1] == status, (request, head)
        web.eof()


def test_a_half_sent_request_is_closed_at_the_registration_timeout(ws_server):
    server, _ = ws_server(limits={"registration_timeout_seconds": 0.5})
    web = RawWs(address_of(server), upgrade=False)
    web.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and nothing more
    head = web.http_head()
    assert head.startswith(b"HTTP/1.1 408")
    web.eof()


# -- frames -------------------------------------------------------------------------------------


def test_an_oversized_message_is_closed_with_1009_after_an_error(ws_server):
    server, _ = ws_server(limits={"max_line_bytes": 256})
    person = server.client()
    raw = RawWs(address_of(server))
    nick = welcomed(raw)
    raw.send_frame(b'{"cmd":"say","text":"' + b"x" * 300 + b'"}')
    code, reason, before = raw.close_frame()
    assert code == 1009 and "too long" in reason
    assert before[-1]["type"] == "error" and before[-1]["code"] == "message_too_big"
    raw.eof()
    person.expect(rf"{nick} (left|quit)")


def test_a_message_in_pieces_counts_whole_against_the_limit(ws_server):
    server, _ = ws_server(limits={"max_line_bytes": 256})
    raw = RawWs(address_of(server))
    welcomed(raw)
    for _ in range(3):
        raw.send_frame(b"x" * 100, opcode=0x1 if _ == 0 else 0x0, fin=False)
    code, _, _ = raw.close_frame()
    assert code == 1009


def test_a_message_left_unfinished_is_held_to_the_partial_line_timeout(ws_server):
    server, _ = ws_server(limits={"partial_line_timeout_seconds": 0.5})
    raw = RawWs(address_of(server))
    welcomed(raw)
    raw.send_frame(b'{"cmd":"say",', fin=False)  # and never the rest
    code, reason, before = raw.close_frame()
    assert code == 1008 and "unfinished line" in reason
    assert before[-1]["code"] == "partial_line_timeout"


def test_several_requests_in_one_message_are_each_parsed_as_jsonl(ws_server):
    server, _ = ws_server()
    person = server.client()
    raw = RawWs(address_of(server))
    nick = welcomed(raw)
    raw.send_frame(b'{"cmd":"say","text":"one"}\n{"cmd":"say","text":"two"}\n{"cmd":"nope}')
    person.expect(rf"^<{nick}> one$")
    person.expect(rf"^<{nick}> two$")
    error = raw.objects_until(lambda o: o["type"] == "error")[-1]
    assert error["text"].startswith("not JSON")


def test_what_one_tick_sends_a_browser_is_one_frame(ws_server):
    """Per-tick coalescing: three requests in one message are answered in one tick, and
    the answers (three replies, each possibly several objects) come in ONE text frame."""
    server, _ = ws_server()
    raw = RawWs(address_of(server))
    welcomed(raw)
    raw.send_frame(b'{"cmd":"who","id":"1"}\n{"cmd":"rooms","id":"2"}\n'
                   b'{"cmd":"topic","room":"#lobby","id":"3"}')
    opcode, payload = raw.frame()
    assert opcode == 0x1
    answers = [json.loads(line) for line in payload.decode().splitlines()]
    assert [a["type"] for a in answers if "re" in a][:2] == ["names", "rooms"]
    assert {a["re"] for a in answers} == {"1", "2", "3"}


def test_a_binary_message_is_closed_with_1003(ws_server):
    server, _ = ws_server()
    raw = RawWs(address_of(server))
    welcomed(raw)
    raw.send_frame(b"\x00\x01", opcode=0x2)
    code, reason, before = raw.close_frame()
    assert code == 1003 and "binary" in reason
    assert before[-1]["code"] == "binary_message"


def test_the_server_pings_a_quiet_client_and_closes_one_that_never_answers(ws_server):
    server, _ = ws_server(ping_seconds=0.3, ping_timeout_seconds=0.3)
    raw = RawWs(address_of(server))
    welcomed(raw)
    opcode, payload = raw.frame()
    assert opcode == 0x9  # PING
    raw.send_frame(payload, opcode=0xA)  # PONG: alive
    assert raw.frame()[0] == 0x9  # quiet again: pinged again
    code, reason, before = raw.close_frame()  # no answer this time
    assert code == 1011 and "ping timeout" in reason
    assert before[-1]["code"] == "ping_timeout"


def test_a_clients_ping_is_answered_with_a_pong(ws_server):
    _, url = ws_server()
    with connect(url, open_timeout=TIMEOUT, ping_interval=None) as ws:
        until(ws, lambda o: o["type"] == "join")
        assert ws.ping(b"are you there").wait(TIMEOUT)


def test_pings_in_one_read_get_one_pong_the_last_ones(ws_server):
    server, _ = ws_server()
    raw = RawWs(address_of(server))
    welcomed(raw)
    mask = b"\0\0\0\0"  # a zero mask: the payload as it is
    raw.sock.sendall(b"".join(bytes([0x89, 0x80 | 2]) + mask + b"%02d" % i for i in range(50)))
    assert raw.frame() == (0xA, b"49")
    raw.send_json({"cmd": "who"})  # the next frame is its reply: no second PONG before it
    opcode, payload = raw.frame()
    assert opcode == 0x1 and b'"names"' in payload


def test_a_client_close_is_echoed_and_the_user_leaves(ws_server):
    server, url = ws_server()
    person = server.client()
    with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        nick = until(ws, lambda o: o["type"] == "join")["from"]
        ws.close(1000, "bye now")
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    person.expect(rf"{nick} (left|quit)")


def test_a_quit_closes_with_a_close_frame_from_the_server(ws_server):
    server, _ = ws_server()
    raw = RawWs(address_of(server))
    welcomed(raw)
    raw.send_json({"cmd": "quit", "reason": "done"})
    code, _, _ = raw.close_frame()
    assert code == 1000
    raw.send_frame(struct.pack("!H", 1000), opcode=0x8)  # the echo
    raw.eof()


def test_a_shutdown_closes_with_1001(ws_server):
    server, _ = ws_server()
    raw = RawWs(address_of(server))
    welcomed(raw)
    server.signal(signal.SIGTERM)
    code, reason, _ = raw.close_frame()
    assert code == 1001 and "shutting down" in reason


# -- one chat for everyone ----------------------------------------------------------------------


def test_websocket_jsonl_and_nc_clients_see_the_same_messages_in_the_same_order(chatd_server):
    """Three talkers (nc, a jsonl bot, a browser) and one listener of each protocol: the
    three listeners see the fifteen lines in one and the same order."""
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"},
                                  {"port": 0, "protocol": "websocket"}],
                          flood={"burst_lines": 100})
    web_address = (server.host, server.ports[2])
    person, bot, talker = server.client(), server.json_client(), RawWs(web_address)
    welcomed(talker)
    nc_ear, bot_ear, web_ear = server.client(), server.json_client(), RawWs(web_address)
    welcomed(web_ear)
    for i in range(5):
        person.send(f"nc {i}")
        bot.send(cmd="say", text=f"bot {i}")
        talker.send_json({"cmd": "say", "text": f"web {i}"})
    wanted = 15

    def web_heard() -> list[str]:
        heard: list[str] = []
        while len(heard) < wanted:
            heard += [o["text"] for o in web_ear.objects_until(lambda o: True)
                      if o["type"] == "message"]
        return heard

    def bot_heard() -> list[str]:
        heard: list[str] = []
        while len(heard) < wanted:
            obj = bot_ear.recv()
            if obj["type"] == "message":
                heard.append(obj["text"])
        return heard

    nc_heard = [nc_ear.expect(r"^<\S+> (.*)$").group(1) for _ in range(wanted)]
    assert sorted(nc_heard) == sorted(f"{who} {i}" for who in ("nc", "bot", "web")
                                      for i in range(5))
    assert web_heard() == nc_heard
    assert bot_heard() == nc_heard


# -- limits as for every client -------------------------------------------------------------


def test_a_tab_that_never_reads_is_cut_by_the_output_limit_and_nobody_else_misses_a_line(
        ws_server):
    server, url = ws_server(limits={"max_output_bytes": 64 << 10, "output_soft_bytes": 64 << 10},
                            net={"sndbuf_bytes": 4096},
                            flood={"burst_lines": 1000, "lines_per_second": 1000})
    sender = server.client()
    victim = RawWs(address_of(server), rcvbuf=4096)
    victim_nick = welcomed(victim)
    sender.expect(rf"{victim_nick} joined")
    with connect(url, open_timeout=TIMEOUT, max_queue=None) as watcher:
        until(watcher, lambda o: o["type"] == "join")
        sender.expect(r"joined")
        lines = [f"{i:04d} " + "x" * 1000 for i in range(200)]
        got, left = [], []
        for line in lines:  # the watcher reads as it goes (the hard limit is everyone's)
            sender.send(line)
            while not got or got[-1] != line:
                obj = until(watcher, lambda o: o["type"] in ("message", "quit"))
                if obj["type"] == "message":
                    got.append(obj["text"])
                else:
                    left.append((obj["from"], obj["text"]))
        assert got == lines
        if not left:
            quit = until(watcher, lambda o: o["type"] == "quit")
            left.append((quit["from"], quit["text"]))
        assert left == [(victim_nick, "output buffer full (not reading)")]
    sender.send("/who")
    sender.expect(r"#lobby has 1 member: ")
    server.wait_for_log(r"output buffer over 65536 bytes")
    victim.close()


def test_a_flood_in_one_message_is_delayed_in_order_not_dropped(ws_server):
    server, _ = ws_server(flood={"burst_lines": 3, "lines_per_second": 50})
    person = server.client()
    raw = RawWs(address_of(server))
    nick = welcomed(raw)
    raw.send_frame("\n".join(json.dumps({"cmd": "say", "text": f"f{i}"})
                             for i in range(12)).encode())
    for i in range(12):
        person.expect(rf"^<{nick}> f{i}$")
    raw.send_json({"cmd": "say", "text": "still connected"})
    person.expect(rf"^<{nick}> still connected$")


def test_a_full_server_refuses_with_an_http_503(ws_server):
    """Refused at the door, before any request: the answer is an HTTP response (a
    browser shows it), not jsonl, with the code in a header."""
    server, url = ws_server(per_ip={"max_connections": 1})
    with connect(url, open_timeout=TIMEOUT) as ws:
        until(ws, lambda o: o["type"] == "join")
        refused = RawWs(address_of(server), upgrade=False)
        head, body = refused.response()
        assert head.startswith(b"HTTP/1.1 503") and b"X-Chatd-Error: per_ip" in head
        assert body.startswith(b"too many connections")
        refused.eof()


def test_a_listener_password_is_jsonls_first_request(ws_server):
    server, _ = ws_server(password="sesame")
    person = server.client()
    raw = RawWs(address_of(server))
    raw.send_json({"cmd": "say", "text": "let me in"})
    refused = raw.objects_until(lambda o: o["type"] == "error")[-1]
    assert refused["code"] == "password_required"
    person.expect_nothing()  # still nobody
    raw.send_json({"cmd": "pass", "password": "sesame"})
    nick = welcomed(raw)
    person.expect(rf"{nick} joined")


def test_wss_over_tls(chatd_server, tmp_path):
    authority = trustme.CA()
    pem = tmp_path / "server.pem"
    authority.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(pem))
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "websocket",
                                                "tls": {"cert": str(pem), "key": str(pem)}}])
    context = ssl.create_default_context()
    authority.configure_trust(context)
    person = server.client()
    with connect(f"wss://localhost:{server.ports[1]}/", ssl=context,
                 open_timeout=TIMEOUT) as ws:
        nick = until(ws, lambda o: o["type"] == "join")["from"]
        ws.send(json.dumps({"cmd": "say", "text": "over tls"}))
        person.expect(rf"^<{nick}> over tls$")
        person.send("hello tls")
        assert until(ws, lambda o: o.get("text") == "hello tls")["from"] == person.nick
    # The page too, same origin over https.
    web = RawWs(("127.0.0.1", server.ports[1]), upgrade=False, tls=context)
    web.request("GET / HTTP/1.1", "Host: localhost")
    head, body = web.response()
    assert head.startswith(b"HTTP/1.1 200") and b"<html" in body
    # Plaintext HTTP on the TLS port: an HTTP answer a browser can show.
    plain = RawWs(("127.0.0.1", server.ports[1]), upgrade=False)
    plain.request("GET / HTTP/1.1", "Host: localhost")
    head, body = plain.response()
    assert head.startswith(b"HTTP/1.1 400") and b"speaks TLS" in body
    # Plaintext HTTP on the TLS port: an HTTP answer a browser can show.
    plain = RawWs(("127.0.0.1", server.ports[1]), upgrade=False)
    plain.request("GET / HTTP/1.1", "Host: localhost")
    head, body = plain.response()
    assert head.startswith(b"HTTP/1.1 400") and b"speaks TLS" in body


@pytest.mark.parametrize("trusted", [True, False])
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(ws_server, trusted):
    server, _ = ws_server(trusted_proxies=["127.0.0.0/8"] if trusted else ["10.0.0.0/8"])
    raw = RawWs(address_of(server), headers=("X-Forwarded-For: 198.51.100.7, 203.0.113.9",))
    nick = welcomed(raw)
    seen = server.wait_for_log(rf"connect id=\d+ nick={nick} peer=(\S+)").group(1)
    # The last hop only: the proxy wrote it; what came before, the client did.
    assert seen.startswith("203.0.113.9:" if trusted else "127.0.0.1:")


def test_without_the_web_extra_chatd_runs_and_a_websocket_listener_is_a_config_error(tmp_path):
    """wsproto and h11 are the web extra: the core imports and checks configs without
    them, and a websocket listener says what to install (no traceback)."""
    config = tmp_path / "chatd.yaml"
    config.write_text("listen:\n  - {port: 0, protocol: websocket}\n")
    hide = "import sys; sys.modules['wsproto'] = sys.modules['h11'] = None; "
    run = [sys.executable, "-c",
           hide + "from chatd.cli import main; sys.exit(main(sys.argv[1:]))",
           "--config", str(config), "--check-config"]
    result = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "needs wsproto and h11: pip install 'chatd[web]'" in result.stderr
    assert "Traceback" not in result.stderr
    config.write_text("listen:\n  - {port: 0, protocol: jsonl}\n")
    result = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
