"""The ``websocket`` listener's HTTP side and framing, in process: bytes in, answers out
(:mod:`chatd.protocols.websocket.handshake`), and the frames the protocol writes
(:mod:`chatd.protocols.websocket.protocol`).  The real-process tests are in
tests/test_websocket.py."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from chatd.protocols.websocket.handshake import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    HttpSide,
    Page,
    Respond,
    Upgrade,
    accept_key,
    origin_allowed,
    page,
)
from chatd.protocols.websocket.protocol import (
    Control,
    FramedTransport,
    close_code,
    close_frame,
    encode_frames,
    frame_header,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def upgrade_request(*extra: str, version: str = "13", key: str = KEY) -> bytes:
    return request("GET /chat HTTP/1.1", "Host: chat.example.org", "Upgrade: websocket",
                   "Connection: keep-alive, Upgrade", f"Sec-WebSocket-Key: {key}",
                   f"Sec-WebSocket-Version: {version}", *extra)


def status(answer: Any) -> int:
    assert isinstance(answer, Respond)
    return int(answer.data.split(b" ", 2)[1])


def test_the_accept_key_is_rfc_6455s():
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(("origin", "host", "origins", "allowed"), [
    (None, "chat.example.org", (), True),  # no Origin: no browser
    ("https://chat.example.org", "chat.example.org", (), True),
    ("http://chat.example.org", "chat.example.org", (), True),  # a proxy ended TLS
    ("https://chat.example.org:8443", "chat.example.org:8443", (), True),
    ("http://127.0.0.1:8080", "127.0.0.1:8080", (), True),
    ("https://CHAT.example.org", "chat.example.org", (), True),
    ("https://evil.example", "chat.example.org", (), False),
    ("https://chat.example.org.evil.example", "chat.example.org", (), False),
    ("https://chat.example.org:8443", "chat.example.org:9000", (), False),
    ("http://chat.example.org", "chat.example.org:8080", (), False),  # port 80 is not 8080
    ("https://chat.example.org:9000", "chat.example.org", (), False),  # nor 9000 a default
    ("null", "chat.example.org", (), False),
    ("https://chat.example.org", None, (), False),
    ("https://chat.example.org", "other.example", ("https://chat.example.org",), True),
    ("https://chat.example.org/", "x", ("https://chat.example.org",), True),
    ("https://evil.example", "evil.example", ("https://chat.example.org",), False),
    ("https://evil.example", "x", ("*",), True),
])
def test_origins(origin, host, origins, allowed):
    assert origin_allowed(origin, host, origins) is allowed


def test_a_valid_upgrade_answers_101_and_keeps_the_bytes_after_it():
    side = HttpSide()
    answers = side.receive(upgrade_request() + b"\x81\x85frame")
    assert len(answers) == 1 and isinstance(answers[0], Upgrade)
    up = answers[0]
    assert up.response.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in up.response
    assert b"Sec-WebSocket-Extensions" not in up.response  # permessage-deflate not taken
    assert up.trailing == b"\x81\x85frame"
    assert up.forwarded_for is None


def test_the_upgrade_may_come_in_pieces():
    side = HttpSide()
    data = upgrade_request()
    for i in range(len(data) - 1):
        assert side.receive(data[i:i + 1]) == []
    assert isinstance(side.receive(data[-1:])[0], Upgrade)


def test_x_forwarded_for_gives_its_last_hop():
    up = HttpSide().receive(upgrade_request("X-Forwarded-For: 10.1.1.1, 203.0.113.9"))[0]
    assert isinstance(up, Upgrade) and up.forwarded_for == "203.0.113.9"


@pytest.mark.parametrize(("data", "expected"), [
    (upgrade_request(version="8"), 426),
    (upgrade_request(key="c2hvcnQ="), 400),  # 5 bytes, not 16
    (upgrade_request(key="not base64!!"), 400),
    (upgrade_request("Origin: https://evil.example"), 403),
    (request("GET / HTTP/1.1", "Host: x", "Upgrade: websocket", f"Sec-WebSocket-Key: {KEY}",
             "Sec-WebSocket-Version: 13"), 400),  # no Connection: Upgrade
    (request("POST / HTTP/1.1", "Host: x", "Content-Length: 0"), 405),
    (request("DELETE /x HTTP/1.1", "Host: x"), 405),
    (request("GET /../../etc/passwd HTTP/1.1", "Host: x"), 404),
    (request("GET /nothing.html HTTP/1.1", "Host: x"), 404),
    (request("GET / HTTP/1.1", "Host: x", "Content-Length: 5") + b"hello", 413),
    (request("GET / HTTP/1.1", "Host: x", *(f"X-{i}: y" for i in range(MAX_HEADERS + 1))),
     431),
    (request("GET / HTTP/1.1", "Host: x", "X-Big: " + "y" * MAX_HEAD_BYTES), 431),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),  # a TLS hello
    (request("NOT HTTP"), 400),
])
def test_everything_else_is_refused_with_a_status_and_closed(data, expected):
    answers = HttpSide().receive(data)
    assert len(answers) == 1
    assert status(answers[0]) == expected
    assert answers[0].close
    head = answers[0].data.split(b"\r\n\r\n")[0]
    assert b"Connection: close" in head and b"X-Content-Type-Options: nosniff" in head


def test_a_head_still_incomplete_past_the_limit_is_refused_before_its_end():
    answers = HttpSide().receive(b"GET / HTTP/1.1\r\nX-Big: " + b"y" * (MAX_HEAD_BYTES + 10))
    assert status(answers[0]) == 431 and answers[0].close


def test_the_page_its_headers_and_304():
    side = HttpSide()
    answer = side.receive(request("GET / HTTP/1.1", "Host: x"))[0]
    assert status(answer) == 200 and not answer.close
    head, body = answer.data.split(b"\r\n\r\n", 1)
    index = page().files["/index.html"]
    assert body == index.body
    assert b"ETag: " + index.etag in head
    assert b"Cache-Control: no-cache" in head
    assert b"Content-Security-Policy: default-src 'none'; " in head
    # Same connection (keep-alive): the next request, with the ETag, is a 304.
    again = side.receive(request("GET /index.html?v=2 HTTP/1.1", "Host: x",
                                 f"If-None-Match: W/{index.etag.decode()}, \"other\""))[0]
    assert status(again) == 304 and not again.close
    assert again.data.endswith(b"\r\n\r\n")  # no body
    head_only = side.receive(request("HEAD / HTTP/1.1", "Host: x"))[0]
    assert status(head_only) == 200 and head_only.data.endswith(b"\r\n\r\n")
    closing = side.receive(request("GET / HTTP/1.1", "Host: x", "Connection: close"))[0]
    assert status(closing) == 200 and closing.close


def test_two_requests_in_one_read_are_both_answered_in_order():
    answers = HttpSide().receive(request("GET / HTTP/1.1", "Host: x")
                                 + request("GET /nope HTTP/1.1", "Host: x"))
    assert [status(a) for a in answers] == [200, 404]


def test_inline_scripts_and_styles_are_allowed_by_their_hash_only(tmp_path):
    (tmp_path / "index.html").write_bytes(
        b"<html><style>p{color:red}</style><script>alert('hi')</script>"
        b"<script src=\"app.js\"></script></html>")
    (tmp_path / "app.js").write_bytes(b"console.log(1)")
    (tmp_path / "notes.txt").write_bytes(b"not served")
    made = Page(tmp_path)
    assert set(made.files) == {"/", "/index.html", "/app.js"}
    csp = made.csp.decode()
    assert csp.count("'sha256-") == 4  # two blocks, each in script-src and style-src
    assert "'unsafe-inline'" not in csp
    assert made.files["/app.js"].content_type.startswith("text/javascript")


# -- frames --------------------------------------------------------------------------------------


def test_frame_headers_for_each_length_size():
    assert frame_header(5) == b"\x81\x05"
    assert frame_header(125) == b"\x81\x7d"
    assert frame_header(126) == b"\x81\x7e\x00\x7e"
    assert frame_header(65535) == b"\x81\x7e\xff\xff"
    assert frame_header(65536) == b"\x81\x7f" + struct.pack("!Q", 65536)
    assert frame_header(0, 0x9) == b"\x89\x00"


def test_a_close_frame_holds_the_code_and_a_reason_cut_to_whole_characters():
    frame = close_frame(1008, "é" * 100)
    assert frame[0] == 0x88 and frame[1] <= 125
    payload = frame[2:]
    assert struct.unpack("!H", payload[:2])[0] == 1008
    assert payload[2:].decode() == "é" * 61  # 122 bytes: the 62nd would make 124
    assert close_code(None) == 1000 and close_code("message_too_big") == 1009
    assert close_code("excess_flood") == 1008 and close_code("ping_timeout") == 1011
    assert close_code("binary_message") == 1003


def test_a_ticks_writes_are_one_text_frame_and_control_frames_stay_whole():
    lines = [b'{"type":"message"}\n', b'{"type":"notice"}\n', b""]
    assert encode_frames(lines) == frame_header(37) + b"".join(lines)
    assert encode_frames([lines[0]]) == frame_header(19) + lines[0]
    ping, close = Control(frame_header(4, 0x9) + b"chat"), Control(close_frame(1000, "bye"))
    assert encode_frames([ping]) == ping
    assert encode_frames([lines[0], ping, lines[1], close]) == (
        frame_header(19) + lines[0] + ping + frame_header(18) + lines[1] + close)
    assert encode_frames([b""]) == b""


def test_a_payload_the_fan_out_shares_is_framed_once_and_each_frame_is_its_own():
    """The fan-out hands one bytes object to every member: its frame is made for the
    first and the same object serves the next; another payload (even one with equal
    bytes, or one between two of the shared one) is framed for itself."""
    shared = b'{"type":"message","text":"' + b"x" * 200 + b'"}\n'
    first = encode_frames([shared])
    assert first == frame_header(len(shared)) + shared
    assert encode_frames([shared]) is first  # the next member: no new frame
    other = b'{"type":"notice"}\n'
    assert encode_frames([other]) == frame_header(len(other)) + other
    equal = bytes(bytearray(shared))  # the same bytes, another object
    assert encode_frames([equal]) == first
    alike = shared.replace(b"x", b"z", 1)  # as long, other bytes: never the shared frame
    assert encode_frames([alike]) == frame_header(len(alike)) + alike
    assert encode_frames([shared]) == first


class Inner:
    """The connection under a :class:`FramedTransport`: what it was given."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.is_open = True
        self.output_bytes = 0
        self.closed: tuple[str, str | None] | None = None
        self.encode: Any = None

    def encode_output(self, encode: Any) -> None:
        self.encode = encode

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def write_now(self, data: bytes) -> None:
        self.written.append(data)

    def close(self, reason: str, *, limit: str | None = None) -> None:
        self.closed = (reason, limit)
        self.is_open = False


def test_the_framed_transport_writes_through_and_closes_with_one_close_frame():
    inner = Inner()
    framed = FramedTransport(inner, ("203.0.113.9", 0))
    assert inner.encode is encode_frames
    # The fan-out's call is the connection's own: no wrapper in between.
    assert framed.write_now == inner.write_now and framed.write == inner.write
    framed.write(b'{"type":"error"}\n')
    framed.close("excess flood", limit="excess_flood")
    framed.close("again")
    assert inner.written == [b'{"type":"error"}\n', close_frame(1008, "excess flood")]
    assert inner.written[1].__class__ is Control  # never inside a text frame
    assert inner.closed == ("again", None)  # closing twice is the connection's business
    assert framed.peer == ("203.0.113.9", 0)


# -- the protocol object, with fakes -----------------------------------------------------------


class FakeConnection(Inner):
    """The connection under the protocol, before and after the upgrade."""

    peer = ("192.0.2.1", 5555)
    reading_held = False

    def registered(self) -> None:
        self.written.append(b"<registered>")


class FakeDoor:
    """A listener's door that records the sessions asked for and the timers set."""

    def __init__(self) -> None:
        from chatd.config import LimitsConfig
        from chatd.protocols import ProtocolLimits
        self.config = None
        self.limits = ProtocolLimits(max_line_bytes=256)
        self.server_limits = LimitsConfig()
        self.password_required = False
        self.greeting_delay = 0.0
        self.begun: list[Any] = []
        self.timers: list[tuple[float, Any]] = []

    def begin(self, protocol: Any, request: Any) -> Any:
        session = FakeSession()
        self.begun.append(session)
        return session

    def call_later(self, delay: float, callback: Any) -> Any:
        timer = FakeTimer()
        self.timers.append((delay, callback))
        return timer


class FakeTimer:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeSession:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def requests_received(self, requests: list[Any]) -> None:
        self.requests.extend(requests)

    def connection_lost(self, reason: str) -> None:
        pass


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return (bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def test_the_session_begins_at_the_upgrade_never_at_a_get():
    from chatd.protocols.websocket import WebSocketProtocol
    conn, door = FakeConnection(), FakeDoor()
    protocol = WebSocketProtocol(conn, door)
    protocol.connection_made()
    assert door.timers[0][0] == 60.0  # the HTTP request's timer: registration_timeout
    protocol.data_received(memoryview(request("GET / HTTP/1.1", "Host: x")))
    assert door.begun == [] and conn.written[-1].startswith(b"HTTP/1.1 200")
    # Before the upgrade, the server's words are HTTP, not jsonl.
    protocol.tell("registration timeout", code="registration_timeout")
    assert conn.written[-1].startswith(b"HTTP/1.1 503")
    protocol.data_received(memoryview(upgrade_request() + masked(b'{"cmd":"say","text":"hi"}')))
    assert len(door.begun) == 1 and protocol.session is door.begun[0]
    assert conn.encode is encode_frames and b"<registered>" in conn.written
    assert door.begun[0].requests == ["hi"]
    assert protocol.name == "websocket" and protocol.renderer.name == "jsonl"
