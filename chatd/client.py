"""A connected chat user, as plugins see it.

:class:`Client` is the public face of a connection: its nick, its rooms, a
place for plugin state, and ways to talk to it.  Every line sent through it is
sanitised (no control characters or escape sequences reach the terminal, even
from a plugin) and framed with ``\\n``.

Line prefixes are the user contract (DESIGN.md section 1): ``* `` a server
notice, ``! `` an error for this client alone, ``<nick> `` a chat message,
``*nick* `` a private message.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .connection import Connection, State
from .framing import LineTooLong, sanitize
from .stash import Stash

if TYPE_CHECKING:
    from collections import deque

    from .flood import TokenBucket
    from .reactor import Timer
    from .rooms import Room
    from .server import Server


class Client:
    """One connected user.  Created by the server; plugins never construct it."""

    __slots__ = (
        "__weakref__",
        "_backlog",
        "_backlog_bytes",
        "_backlog_timer",
        "_bucket",
        "_close_after_backlog",
        "_conn",
        "connected_at",
        "connected_mono",
        "id",
        "nick",
        "registered",
        "room",
        "rooms",
        "server",
        "stash",
    )

    def __init__(self, server: Server, conn: Connection, client_id: int, nick: str) -> None:
        self.server = server
        self._conn = conn
        #: A number unique for the life of the server process.
        self.id = client_id
        self.nick = nick
        #: The current room: where plain lines go.  Set by the rooms plugin.
        self.room: Room | None = None
        #: Every room the client is in, in join order (a dict used as an ordered set).
        self.rooms: dict[Room, None] = {}
        #: Per-plugin state; see :mod:`chatd.stash`.
        self.stash = Stash()
        self.connected_at = time.time()
        self.connected_mono = time.monotonic()
        #: False until the client sent its first line (see limits.registration_timeout).
        self.registered = False
        # Flood control (chatd.flood): lines waiting for the rate limit, in order.
        self._bucket: TokenBucket | None = None
        self._backlog: deque[str | LineTooLong] | None = None  # made on first use: memory
        self._backlog_bytes = 0
        self._backlog_timer: Timer | None = None
        self._close_after_backlog = False

    # -- talking to the client ---------------------------------------------

    def send(self, text: str) -> None:
        """Send ``text`` as one line (or several, if it contains newlines)."""
        if "\n" in text:
            for line in text.split("\n"):
                self.send(line)
            return
        fanout = self.server._fanout
        if fanout.pending and not fanout.rooms_pending.isdisjoint(self.rooms):
            fanout.flush()  # room lines produced earlier must arrive earlier
        self._conn.write((sanitize(text) + "\n").encode("utf-8"))

    def notice(self, text: str) -> None:
        """A server notice: ``* text``."""
        self.send("* " + text)

    def error(self, text: str) -> None:
        """An error for this client alone: ``! text``."""
        self.send("! " + text)

    def close(self, reason: str = "", goodbye: str | None = None) -> None:
        """Disconnect after delivering ``goodbye`` (a notice) and anything queued.

        ``reason`` is what the others are told (``alice quit (reason)``) and what
        ``chatd_client_disconnect`` receives.
        """
        if goodbye:
            self.notice(goodbye)
        self._conn.close(reason or "closed")

    # -- facts ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False once the client is leaving; sends are then ignored."""
        return self._conn.state is State.OPEN

    @property
    def address(self) -> str:
        """The peer's IP address."""
        return self._conn.peer[0]

    @property
    def peer(self) -> tuple[str, int]:
        """The peer's (address, port)."""
        return self._conn.peer

    @property
    def output_bytes(self) -> int:
        """Bytes queued for this client and not yet accepted by the kernel."""
        return self._conn.output_bytes

    # -- transport callbacks (the connection's protocol) -----------------------

    def lines_received(self, lines: list[str | LineTooLong]) -> None:
        self.server._handle_lines(self, lines)

    def lines_skipped(self, count: int) -> None:
        self.notice(
            f"{count} line(s) skipped: you were not reading fast enough (your connection "
            "or terminal is too slow for this room)"
        )

    def eof_received(self) -> bool:
        return self.server._eof_received(self)

    def connection_lost(self, reason: str) -> None:
        self.server._client_gone(self, reason)

    def __repr__(self) -> str:
        return f"<Client #{self.id} {self.nick} {self._conn.peer[0]}:{self._conn.peer[1]}>"
