"""The strict transcript of what chatd sends to IRC clients (issue 20).

Real IRC client software parses leniently: a client that shows a line is no proof the
line was valid IRC.  So every byte chatd sends to the clients of tests/test_irc_clients.py
is recorded on the way in, and at the end of each test the whole transcript is parsed
with the project's strict parser (``wire.parse(strict=True)``: tags and their escaping,
source, command or 3-digit numeric, at most 15 parameters, no NUL/CR/LF) plus the
framing rules the parser does not see: every line ends with CR LF, is UTF-8, and its body
(all but the tags) is at most 512 bytes with the CR LF.

Two recorders, one check:
- :class:`RecordingSocket` wraps the socket of an in-test client (the ``irc`` library's
  ``connect_factory``);
- :class:`RecordingRelay` is a loopback TCP relay for a client we cannot reach inside
  (WeeChat): the client connects to the relay, the relay to chatd, and the bytes from
  chatd are kept.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

from chatd.protocols.irc.wire import BODY_MAX, Message, WireError, parse


def strict_lines(data: bytes, *, complete: bool = True) -> list[Message]:
    """Every line of ``data`` parsed strictly; AssertionError names the first bad line.

    ``complete``: the stream ended (the connection closed or the test is over), so
    bytes after the last LF are an unterminated line, which is an error.
    """
    *lines, rest = data.split(b"\n")
    assert not (complete and rest), f"an unterminated line at the end: {rest[:200]!r}"
    messages = []
    for number, raw in enumerate(lines, 1):
        where = f"line {number} {raw[:300]!r}"
        assert raw.endswith(b"\r"), f"{where}: not CR LF terminated"
        try:
            text = raw[:-1].decode("utf-8")
        except UnicodeDecodeError as error:
            raise AssertionError(f"{where}: not UTF-8 ({error})") from None
        body = text.partition(" ")[2] if text.startswith("@") else text
        assert len(body.encode()) + 2 <= BODY_MAX, f"{where}: body over {BODY_MAX} bytes"
        try:
            messages.append(parse(text, strict=True))
        except WireError as error:
            raise AssertionError(f"{where}: {error}") from None
    return messages


class RecordingSocket:
    """A socket that keeps every byte it receives (``received``); the rest passes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.received = bytearray()
        self.ended = False  # the server closed: the stream is whole

    def recv(self, size: int, *flags: int) -> bytes:
        data = self._sock.recv(size, *flags)
        self.received += data
        self.ended = self.ended or not data
        return data

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class RecordingRelay:
    """A loopback TCP relay to ``target`` that keeps what the target sends, per connection.

    One thread, one selector; ``close()`` stops it.  A client that connects to
    ``address`` talks to the target through it, unchanged.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.streams: list[bytearray] = []
        self.ended: list[bool] = []  # per stream: the target closed, the stream is whole
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self._stop = socket.socketpair()
        self._selector.register(self._stop[0], selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="irc-relay", daemon=True)
        self._thread.start()

    def _accept(self, _sock: socket.socket) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.target, timeout=5)
        kept = bytearray()
        self.streams.append(kept)
        self.ended.append(False)
        for sock in (client, server):
            sock.setblocking(False)
        self._selector.register(client, selectors.EVENT_READ, self._pump(client, server, None))
        self._selector.register(server, selectors.EVENT_READ,
                                self._pump(server, client, kept, len(self.ended) - 1))

    def _pump(self, source: socket.socket, sink: socket.socket, kept: bytearray | None,
              index: int = -1) -> Callable[[socket.socket], None]:
        def pump(_sock: socket.socket) -> None:
            try:
                data = source.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                if kept is not None:
                    self.ended[index] = True
                self._drop(source, sink)
                return
            if kept is not None:
                kept.extend(data)
            sink.setblocking(True)  # loopback, small: a blocking write is brief
            try:
                sink.sendall(data)
            except OSError:
                self._drop(source, sink)
            else:
                sink.setblocking(False)
        return pump

    def _drop(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                key.data(key.fileobj)

    def close(self) -> None:
        self._stop[1].send(b"x")
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()
        self._stop[1].close()


class Transcript:
    """Every stream chatd sent to the test's IRC clients; ``check()`` parses them all."""

    def __init__(self) -> None:
        self.sockets: list[RecordingSocket] = []
        self.relays: list[RecordingRelay] = []

    def connect(self, address: tuple[str, int]) -> RecordingSocket:
        """A ``connect_factory`` for the ``irc`` library: a recorded connection."""
        sock = RecordingSocket(socket.create_connection(address, timeout=5))
        self.sockets.append(sock)
        return sock

    def relay(self, target: tuple[str, int]) -> RecordingRelay:
        relay = RecordingRelay(target)
        self.relays.append(relay)
        return relay

    def streams(self) -> list[tuple[bytes, bool]]:
        """Each stream, and whether it is whole (the server closed it): a stream the test
        left open may end inside a line the client had not read yet."""
        kept = [(bytes(s.received), s.ended) for s in self.sockets]
        return kept + [(bytes(data), ended) for r in self.relays
                       for data, ended in zip(r.streams, r.ended, strict=True)]

    def check(self) -> int:
        """Parse every stream strictly; the number of lines checked."""
        for relay in self.relays:
            relay.close()
        streams = self.streams()
        assert all(data for data, _ in streams), "a connection recorded nothing"
        return sum(len(strict_lines(data, complete=ended)) for data, ended in streams)
