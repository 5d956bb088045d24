"""The ``websocket`` listener's connections: HTTP until the upgrade, then jsonl in frames.

A connection is nobody while it speaks HTTP (:mod:`.handshake`: the page, refusals):
its chat session begins at a valid upgrade, never at ``GET /``, and an HTTP
request (or a keep-alive connection that never upgrades) is held to
``limits.registration_timeout_seconds`` (60 s where that is 0) by a timer of the
protocol's own, the slow request (slowloris) included.

After the upgrade, wsproto parses the client's frames (masked, checked).  Each
complete text message is jsonl input: one or more requests separated by ``\\n``,
each parsed exactly as a jsonl line (:func:`chatd.protocols.jsonl.parse_request`,
through :class:`~chatd.protocols.jsonl.JsonlProtocol`'s ``parse``; a listener
password is jsonl's first ``pass`` request).  A message longer than the server's
``limits.max_line_bytes`` is closed with 1009, a binary one with 1003.

Output is jsonl's, rendered by jsonl's renderer (the same object: a room of
browsers and jsonl bots renders each event once).  Once upgraded, the
connection frames its output where the bytes leave (its ``encode_output``,
:func:`encode_frames`): everything written for a browser in one tick goes out as
ONE unmasked text frame in one ``send``, and the fan-out's direct send is a small
header before the payload every recipient shares, so the fan-out never learns
about WebSocket.  A text frame holds one or more complete jsonl lines
(docs/protocols.md: the client splits on ``\\n``).

Keepalive: after ``ping_seconds`` without a frame from the client the server sends
a PING, and closes with 1011 if nothing comes within ``ping_timeout_seconds``; a
client's PING is answered with a PONG.  The close handshake both ways: a client's
close frame is echoed, then the TCP connection closed; a server close (a limit,
``/quit``, a kill, a shutdown) sends a close frame with a code and the reason,
after the ``error`` object that says why where there is one.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Mapping
from typing import Any

from ..jsonl import RENDERER, JsonlProtocol
from ..keepalive import Keepalive
from .handshake import HttpSide, Upgrade, plain_response

try:
    from wsproto.connection import Connection as _WsConnection
    from wsproto.connection import ConnectionState, ConnectionType
    from wsproto.events import (
        BytesMessage,
        CloseConnection,
        Ping,
        Pong,
        TextMessage,
    )
except ImportError:  # the [web] extra is missing: the listener's options say so first
    _WsConnection = None  # type: ignore[assignment,misc]

#: Close codes (RFC 6455 7.4.1).
NORMAL, GOING_AWAY, POLICY, UNSUPPORTED, TOO_BIG, INTERNAL, TRY_AGAIN = (
    1000, 1001, 1008, 1003, 1009, 1011, 1013)
#: The close code for a limit a connection hit (``Transport.close``'s ``limit``);
#: any other limit is a policy violation (1008), no limit a normal close (1000).
LIMIT_CODES = {
    "qbuf": TOO_BIG,
    "message_too_big": TOO_BIG,
    "binary_message": UNSUPPORTED,
    "ping_timeout": INTERNAL,
    "server_full": TRY_AGAIN,
    "shutdown": GOING_AWAY,
}
#: Most bytes of a close frame's reason (a control frame's payload is at most 125).
_REASON_MAX = 123
#: How long an HTTP connection may wait to become a WebSocket where
#: ``limits.registration_timeout_seconds`` is 0 (off for chat clients; never for HTTP).
HTTP_TIMEOUT_DEFAULT = 60.0


def frame_header(length: int, opcode: int = 0x1) -> bytes:
    """The header of an unmasked final frame of ``length`` payload bytes."""
    if length < 126 and opcode == 0x1:
        return _TEXT_HEADERS[length]
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


#: The two-byte headers of short text frames, made once (most events are one of them).
_TEXT_HEADERS = tuple(bytes((0x81, n)) for n in range(126))


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with ``code`` and ``reason`` (cut to 123 bytes of whole characters)."""
    data = reason.encode("utf-8")
    if len(data) > _REASON_MAX:
        data = data[:_REASON_MAX].decode("utf-8", "ignore").encode("utf-8")
    payload = struct.pack("!H", code) + data
    return frame_header(len(payload), 0x8) + payload


def close_code(limit: str | None) -> int:
    """The close code for a connection closed for ``limit`` (see :data:`LIMIT_CODES`)."""
    if limit is None:
        return NORMAL
    return LIMIT_CODES.get(limit, POLICY)


class Control(bytes):
    """A control frame (PING, PONG, close), whole: it goes out between the text frames
    as it is, never inside one (:func:`encode_frames`)."""

    __slots__ = ()


def _text_frame(data: bytes) -> bytes:
    size = len(data)
    return (_TEXT_HEADERS[size] if size < 126 else frame_header(size)) + data


class _LastFrame:
    """The last payload framed alone, and its frame.  The fan-out hands one bytes
    object to every member of a room that shares a renderer, one member after the
    other: the first browser's frame serves the rest (an identity check each, no
    header and no copy of the payload per recipient).  Holding the payload keeps its
    identity from being reused while it is remembered."""

    __slots__ = ("frame", "payload")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.frame = b""


_shared = _LastFrame()


def encode_frames(writes: list[bytes]) -> bytes:
    """What an upgraded connection sends for the writes of one tick (the connection's
    ``encode_output``): every jsonl line written in ONE text frame (one between two
    control frames), the control frames as they are.  The fan-out's direct send is
    one write: a header before the payload every recipient shares."""
    if len(writes) == 1:  # the fan-out's direct send: framed once for all who share it
        data = writes[0]
        if data is _shared.payload:
            return _shared.frame
        if data.__class__ is Control or not data:
            return data
        size = len(data)
        frame = (_TEXT_HEADERS[size] if size < 126 else frame_header(size)) + data
        _shared.payload, _shared.frame = data, frame
        return frame
    out: list[bytes] = []
    text: list[bytes] = []
    for data in writes:
        if data.__class__ is Control:
            if text:
                out.append(_text_frame(b"".join(text)))
                text = []
            out.append(data)
        elif data:
            text.append(data)
    if text:
        out.append(_text_frame(b"".join(text)))
    return b"".join(out)


class FramedTransport:
    """The transport of an upgraded connection, as its protocol and the chat domain see
    it: the connection itself for writing (its ``encode_output`` frames each tick's
    writes, :func:`encode_frames`), the client's address, and a close that sends a
    close frame first.

    ``write`` and ``write_now`` are the connection's own bound methods, so the fan-out's
    call costs nothing more than on any connection; the slow-reader rule and the output
    limits stay the connection's, counted in jsonl lines and bytes as written.
    """

    __slots__ = ("_closed", "_inner", "peer", "write", "write_now")

    def __init__(self, inner: Any, peer: tuple[str, int]) -> None:
        self._inner = inner
        #: The client's address: the connection's, or the trusted proxy's forwarded one.
        self.peer = peer
        #: A close frame was sent (or the client's echoed): no second one.
        self._closed = False
        inner.encode_output(encode_frames)
        self.write = inner.write
        self.write_now = inner.write_now

    @property
    def is_open(self) -> bool:
        return bool(self._inner.is_open)

    @property
    def output_bytes(self) -> int:
        return int(self._inner.output_bytes)

    def write_raw(self, data: bytes) -> None:
        """A control frame, whole (wsproto's PONG, a PING, the echo of a close)."""
        self._inner.write(Control(data))

    def close_frame_sent(self) -> bool:
        """Mark the close frame sent; False if it had been already."""
        if self._closed:
            return False
        self._closed = True
        return True

    def close(self, reason: str, *, limit: str | None = None) -> None:
        """Send a close frame (the code for ``limit``, ``reason``), then close the TCP
        connection gracefully (the goodbye flushed, the client's echo awaited briefly)."""
        if self._inner.is_open and self.close_frame_sent():
            self._inner.write(Control(close_frame(close_code(limit), reason)))
        self._inner.close(reason, limit=limit)

    def reject_foreign(self, kind: str, reply: bytes) -> None:
        self.write(reply)
        self.close(f"spoke {kind}, not chat", limit=f"foreign_{kind}")

    def registered(self) -> None:
        self._inner.registered()

    def hold_reading(self) -> None:
        self._inner.hold_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    @property
    def reading_held(self) -> bool:
        return bool(self._inner.reading_held)


class WebSocketProtocol(JsonlProtocol):
    """A browser's (or a program's) connection to a ``websocket`` listener."""

    renderer = RENDERER  # jsonl's own object: see the module docstring
    wire_name = "websocket"
    __slots__ = ("_http", "_keepalive", "_message", "_message_bytes", "_seen", "_timer", "_ws")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http: HttpSide | None = None
        self._ws: Any = None
        self._timer: Any = None
        self._message: list[str] = []
        self._message_bytes = 0
        self._keepalive: Keepalive | None = None
        #: When the client last sent a frame, any frame (the keepalive's clock; a PONG
        #: is no input: ``last_input``, the idle timeout's, moves on messages only).
        self._seen = self.opened_at

    @property
    def options(self) -> Mapping[str, Any]:
        listener = self.listener
        return listener.options if listener is not None else {}

    @classmethod
    def refusal(cls, code: str, text: str) -> bytes:
        """A refusal at the door comes before any HTTP: an HTTP response (503, or 400
        for a peer speaking something else) with the text, and the code in a header."""
        status = 400 if code.startswith(("foreign_", "tls_")) else 503
        return plain_response(status, text, [(b"X-Chatd-Error", code.encode("ascii", "replace"))])

    # -- HTTP ------------------------------------------------------------------------

    def connection_made(self) -> None:
        """HTTP first: no session until the upgrade; the request's timer starts now."""
        self._http = HttpSide(origins=tuple(self.options.get("origins") or ()))
        timeout = self._door.server_limits.registration_timeout_seconds or HTTP_TIMEOUT_DEFAULT
        self._timer = self._door.call_later(timeout, self._http_over)

    def tell(self, text: str, *, code: str | None = None) -> None:
        """Before the upgrade the peer speaks HTTP: told with a ``503`` and the text (the
        server's sweep cutting a silent connection); after it, a jsonl ``error``."""
        if self._ws is None:
            self.transport.write(plain_response(503, text, [
                (b"X-Chatd-Error", (code or "error").encode("ascii", "replace"))]))
            return
        super().tell(text, code=code)

    def _http_over(self) -> None:
        self._timer = None
        if self._ws is None and self.transport.is_open:
            self.transport.write(plain_response(408, "request timeout"))
            self.transport.close("HTTP request timed out", limit="registration_timeout")

    def data_received(self, data: memoryview) -> None:
        if self._ws is not None:
            self._frames(bytes(data))
            return
        http = self._http
        if http is None:
            return
        for answer in http.receive(bytes(data)):
            if isinstance(answer, Upgrade):
                self._upgrade(answer)
                return
            if answer.data:
                self.transport.write(answer.data)
            if answer.close:
                self.transport.close(answer.reason)
                return

    def _upgrade(self, upgrade: Upgrade) -> None:
        """The ``101``, then frames: the transport becomes a :class:`FramedTransport`
        and the chat session begins (where the listener has a password, at the first
        request, jsonl's ``pass``)."""
        conn = self.transport
        conn.write(upgrade.response)
        self._http = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ws = _WsConnection(ConnectionType.SERVER)
        self.transport = FramedTransport(conn, self._client_address(upgrade.forwarded_for))
        self._seen = time.monotonic()
        if not self._door.password_required:
            if not self.begin_session():
                return
            # A valid upgrade is speaking the protocol: a client now, not a silent
            # connection (admission), as a line or jsonl client after its first line.
            self.registered = True
            self.transport.registered()
        self._keepalive_from_now()
        if upgrade.trailing and self.transport.is_open:
            self._frames(upgrade.trailing)

    def _client_address(self, forwarded: str | None) -> tuple[str, int]:
        """The connection's address, or the ``X-Forwarded-For`` last hop where the peer
        is one of the listener's ``trusted_proxies`` (and the hop is an address).  Not
        behind the PROXY protocol: there the header has named the client already."""
        peer = self.transport.peer
        listener = self.listener
        if forwarded is None or listener is None or not listener.trusted_proxies:
            return peer
        if listener.proxy_protocol:
            return peer  # the PROXY header named the client: it sent the header, no proxy
        try:
            address = ipaddress.ip_address(peer[0])
            trusted = any(address in ipaddress.ip_network(net, strict=False)
                          for net in listener.trusted_proxies)
            hop = ipaddress.ip_address(forwarded.strip("[]"))
        except ValueError:
            return peer
        return (str(hop), 0) if trusted else peer

    # -- WebSocket ---------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        """The client's frames in one read: messages to jsonl, control frames answered.
        PINGs are answered once per read, the last one (RFC 6455 5.5.3 allows it): a
        client sending thousands gets one PONG, not a PONG each."""
        ws = self._ws
        ws.receive_data(data)
        ping = None
        for event in ws.events():
            if not self.transport.is_open:
                return
            cls = event.__class__
            if cls is TextMessage:
                self._text(event.data, event.message_finished)
            elif cls is Ping:
                ping = event
            elif cls is Pong:
                pass  # alive: _alive() below
            elif cls is CloseConnection:
                self._closed_by_client(event)
                return
            elif cls is BytesMessage:
                self._refuse("binary messages are not accepted: send jsonl text",
                             code="binary_message")
                return
        if ping is not None and self.transport.is_open:
            self.transport.write_raw(ws.send(ping.response()))
        self._alive()

    def _alive(self) -> None:
        """A frame came: the client is there (the keepalive's clock)."""
        self._seen = time.monotonic()

    def _text(self, chunk: str, finished: bool) -> None:
        size = len(chunk) if chunk.isascii() else len(chunk.encode("utf-8"))
        self._message_bytes += size
        limit = self._door.limits.max_line_bytes
        if self._message_bytes > limit:
            self._refuse(f"message too long: at most {limit} bytes", code="message_too_big")
            return
        self._message.append(chunk)
        if not finished:  # a message in pieces is an unfinished line (its timeout)
            if self.partial_since is None:
                self.partial_since = time.monotonic()
            return
        text = "".join(self._message) if len(self._message) > 1 else self._message[0]
        self._message = []
        self._message_bytes = 0
        self.partial_since = None
        lines: list[Any] = text.split("\n")
        self._lines_received(lines)

    def _refuse(self, text: str, *, code: str) -> None:
        """Tell the client why (a jsonl ``error`` with ``code``), then close with the
        close code for that limit (:data:`LIMIT_CODES`)."""
        self.tell(text, code=code)
        self.transport.close(text, limit=code)

    def _closed_by_client(self, event: Any) -> None:
        """The client's close frame (or wsproto's verdict on a broken frame): echo it
        (the verdict's code for a broken one), then close the TCP connection."""
        ws = self._ws
        transport = self.transport
        if ws.state is ConnectionState.REMOTE_CLOSING:
            reply = ws.send(event.response())
            reason = "connection closed by peer"
        else:  # a protocol error found by wsproto: close with its code
            reply = close_frame(event.code, event.reason or "protocol error")
            reason = f"WebSocket protocol error: {event.reason}"
        if transport.close_frame_sent():
            transport.write_raw(reply)
        transport.close(reason)

    def goodbye(self, reason: str) -> bytes:
        """The server closes on its own (a shutdown): a close frame, 1001."""
        transport = self.transport
        if isinstance(transport, FramedTransport) and transport.close_frame_sent():
            return Control(close_frame(GOING_AWAY, reason))
        return b""

    # -- keepalive ---------------------------------------------------------------------

    def _keepalive_from_now(self) -> None:
        options = self.options
        self._keepalive = Keepalive(
            self._door, float(options.get("ping_seconds", 0) or 0),
            float(options.get("ping_timeout_seconds", 0) or 0),
            heard=lambda: self._seen, held=lambda: self.input_held,
            alive=lambda: self.transport.is_open and isinstance(self.transport,
                                                                FramedTransport),
            ping=lambda: self.transport.write_raw(frame_header(4, 0x9) + b"chat"),
            give_up=lambda timeout: self._refuse(
                f"ping timeout: no answer in {timeout:g} seconds", code="ping_timeout"))
        self._keepalive.start()

    def connection_lost(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._keepalive is not None:
            self._keepalive.stop()
        super().connection_lost(reason)


__all__ = [
    "Control",
    "FramedTransport",
    "WebSocketProtocol",
    "close_frame",
    "encode_frames",
    "frame_header",
]
