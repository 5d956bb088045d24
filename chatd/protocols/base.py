"""What every protocol is: bytes in -> requests, events out -> bytes, per connection.

A protocol object sits between one transport (the socket's
:class:`~chatd.transport.connection.Connection`) and one session (the chat domain's
:class:`~chatd.chat.client.Client`), and knows neither's insides: it is handed
both as objects with the small interfaces below, so it can be tested with
bytes and fakes alone (the h11 habit).

Input: the transport calls :meth:`ChatProtocol.data_received` with whatever
``recv`` returned.  The protocol frames it into lines (the same
:class:`~chatd.framing.LineFramer` for every line-based protocol: limits,
``\\r\\n``, UTF-8 per line, sanitising), turns the lines into requests
(:mod:`chatd.requests`) with :meth:`ChatProtocol.parse`, and hands them to the
session in one call per read.

Output: an event reaches a protocol in one of two ways.

* :meth:`ChatProtocol.deliver` — one event for this connection only (a private
  message, an error, a reply).  Rendered for this viewer with
  :meth:`Renderer.render_for`, so a sender can see its own message differently.
* The fan-out (:mod:`chatd.delivery`) renders a room's events **once per
  renderer** with :meth:`Renderer.render` and hands the same bytes to every
  member using that renderer through its transport's ``write_now``.  This is
  why rendering lives in a per-protocol :class:`Renderer` and not in the
  per-connection object.

Renderers sanitise everything they emit: text from users, plugins and the
server alike goes through :func:`chatd.framing.sanitize`, and a newline in it
becomes a continuation line with the same marker, never a free line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Protocol

from ..config import ListenConfig
from ..events import Event
from ..framing import LineFramer, LineTooLong, decode_line, sniff_foreign_protocol
from ..requests import Request

# -- the neighbours' interfaces ---------------------------------------------------------------


class Transport(Protocol):
    """What a protocol writes to: the connection (see :mod:`chatd.transport.connection`)."""

    peer: tuple[str, int]
    output_bytes: int
    limit_hit: str | None

    @property
    def is_open(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def write_now(self, data: bytes) -> None: ...

    def close(self, reason: str) -> None: ...

    def reject_foreign(self, kind: str) -> None: ...

    def registered(self) -> None:
        """The peer spoke this protocol (its first acceptable line): from now on it
        counts as a client, not as an unregistered connection (admission)."""

    def hold_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    @property
    def reading_held(self) -> bool: ...


class Session(Protocol):
    """What a protocol reports to: the chat domain's client."""

    def requests_received(self, requests: list[Request]) -> None: ...

    def eof_received(self) -> bool:
        """The peer half-closed; True keeps the connection open (delayed lines)."""
        ...

    def output_skipped(self, count: int) -> None: ...

    def connection_lost(self, reason: str) -> None: ...


class Renderer:
    """Turns events into one protocol's bytes.  One instance per protocol, shared.

    Subclasses implement :meth:`render`; :meth:`render_for` defaults to it.  A
    renderer returns ``b""`` for an event its clients are not shown.
    """

    #: The protocol's name (``line``, ``jsonl``), also the listener's ``protocol:``.
    name: ClassVar[str] = "?"
    #: Whether a room event reads differently for a member whose current room is
    #: another one (:meth:`render_elsewhere`); False lets the fan-out skip the check.
    shows_room: ClassVar[bool] = False

    def render(self, event: Event) -> bytes:
        """The bytes every recipient other than the event's source sees."""
        raise NotImplementedError

    def render_elsewhere(self, event: Event, rendered: bytes) -> bytes:
        """A room event for a member of the room that is currently talking in another one.

        ``rendered`` is ``render(event)``, already made: derive from it rather than
        render again (the fan-out renders each event once per protocol).
        """
        return rendered

    def render_for(self, event: Event, viewer: str | None, tag: str | None = None) -> bytes:
        """The bytes the client whose session is ``viewer`` sees (it may be the source:
        ``event.source.is_session(viewer)``, never a comparison of per-process ids).

        ``tag`` is the identifier of the request being answered, if the client
        gave one (see :mod:`chatd.requests`).
        """
        return self.render(event)

    def render_stamped(self, event: Event, rendered: bytes) -> bytes:
        """``rendered`` for a client that asked to see the time of every line.

        Protocols whose events carry their time (jsonl's ``time``) return it as is.
        """
        return rendered

    def local_error(self, text: str) -> bytes:
        """An error the protocol itself reports (bad framing), not a chat event."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """The input limits of one connection, fixed when it is accepted."""

    max_line_bytes: int = 4096
    #: Most bytes of one over-long line discarded before the client is cut.
    recvq_max: int = 65536


# -- the base class of line-based protocols -------------------------------------------------------


class ChatProtocol:
    """One connection's protocol.  Subclasses set :attr:`renderer` and :meth:`parse`.

    Attributes the chat domain and the housekeeping sweep read:

    ``registered``
        The client has sent at least one line (see ``limits.registration_timeout``).
    ``opened_at`` / ``last_input``
        Monotonic times of the connection and of its last complete line.
    ``partial_since``
        Since when an unfinished line has been waiting, or None.
    """

    renderer: ClassVar[Renderer]
    #: How a framed line's bytes become a line (:class:`~chatd.framing.LineFramer`'s
    #: ``decode``): text for people by default; jsonl decodes strictly instead.
    decode = staticmethod(decode_line)

    #: The tag of the request being handled, echoed in the reply by protocols whose
    #: requests can carry one (a slot of theirs: jsonl's ``id``); None for the others.
    reply_tag: str | None = None

    #: How the connection ends after a goodbye the peer did not ask to end with its own
    #: FIN (``/quit``, a shutdown, a limit): False, a FIN after the last byte (programs
    #: read to end of file); True, a reset once the peer's TCP acknowledged the last
    #: byte (``nc`` and ``ncat`` return to the shell only on a reset: see
    #: :mod:`chatd.transport.connection`).  The listener gives its connections this ending.
    reset_after_goodbye: ClassVar[bool] = False

    __slots__ = (
        "_framer",
        "_limits",
        "last_input",
        "listener",
        "opened_at",
        "partial_since",
        "registered",
        "session",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        limits: ProtocolLimits | None = None,
        listener: ListenConfig | None = None,
    ) -> None:
        self.transport = transport
        #: The settings of the listener that accepted the connection (None: made by a
        #: test without one); the chat domain shows it to plugins as ``client.listener``.
        self.listener = listener
        self.session: Session | None = None
        self._limits = limits = limits if limits is not None else ProtocolLimits()
        #: Made on the first chunk received (so ``None`` also says "nothing came
        #: yet"): a connection that only listens (most of them) needs no line buffer.
        self._framer: LineFramer | None = None
        now = time.monotonic()
        self.opened_at = now
        self.last_input = now
        self.partial_since: float | None = None
        self.registered = False

    @property
    def name(self) -> str:
        return self.renderer.name

    # -- from the transport ------------------------------------------------------------

    def data_received(self, data: memoryview) -> None:
        """Bytes from the socket: frame, parse, hand the requests to the session."""
        framer = self._framer
        if framer is None:  # the first chunk: another protocol's greeting?
            kind = sniff_foreign_protocol(data)
            if kind is not None:
                self.transport.reject_foreign(kind)
                return
            framer = self._framer = LineFramer(self._limits.max_line_bytes, self.decode)
        lines = framer.feed(data)
        if framer.discarded > self._limits.recvq_max:
            self.transport.limit_hit = "qbuf"
            self.transport.write(self.renderer.local_error(
                "input line far too long (excess flood); disconnecting"
            ))
            self.transport.close("excess flood: input line too long")
            return
        if framer.buffered or framer.discarded:
            if self.partial_since is None:
                self.partial_since = time.monotonic()
        else:
            self.partial_since = None
        if lines:
            self._lines_received(lines)

    def _lines_received(self, lines: list[str | LineTooLong]) -> None:
        self.last_input = time.monotonic()
        if not self.registered:
            if not self._first_line(lines[0]):
                return
            self.registered = True
            self.transport.registered()
        requests = self.parse(lines)
        if requests and self.session is not None and self.transport.is_open:
            self.session.requests_received(requests)

    def _first_line(self, line: str | LineTooLong) -> bool:
        """Check the first line (another protocol's greeting?); False if rejected."""
        if line.__class__ is not LineTooLong and sniff_foreign_protocol(
            line.encode()  # type: ignore[union-attr]
        ) == "http":
            self.transport.reject_foreign("http")
            return False
        return True

    def eof_received(self) -> bool:
        """The peer sent FIN: deliver the unterminated last line, then ask the session."""
        tail = self._framer.finish() if self._framer is not None else None
        if tail is not None:
            self._lines_received([tail])
        if not self.transport.is_open or self.session is None:
            return False
        return self.session.eof_received()

    def lines_skipped(self, count: int) -> None:
        if self.session is not None:
            self.session.output_skipped(count)

    def connection_lost(self, reason: str) -> None:
        if self.session is not None:
            self.session.connection_lost(reason)

    # -- what the lines mean (per protocol) ------------------------------------------------

    def parse(self, lines: list[str | LineTooLong]) -> list[Request]:
        """Turn framed lines into requests."""
        raise NotImplementedError

    # -- to the client --------------------------------------------------------------------

    def deliver(self, event: Event, viewer: str | None, stamped: bool = False, *,
                elsewhere: bool = False) -> None:
        """Render ``event`` for this connection's client (session ``viewer``) and queue it;
        ``stamped``: the client asked for the time in front of every line;
        ``elsewhere``: a room event for a member talking in another room (as the
        fan-out's :meth:`Renderer.render_elsewhere`)."""
        data = self.renderer.render_for(event, viewer, self.reply_tag)
        if data and elsewhere:
            data = self.renderer.render_elsewhere(event, data)
        if data and stamped:
            data = self.renderer.render_stamped(event, data)
        if data:
            self.transport.write(data)

    def hold_input(self) -> None:
        """Stop reading the client (backpressure) until :meth:`resume_input`."""
        self.transport.hold_reading()

    def resume_input(self) -> None:
        self.transport.resume_reading()

    @property
    def input_held(self) -> bool:
        """Reading is held: the input timeouts do not run (nothing can arrive)."""
        return self.transport.reading_held

    def close(self, reason: str, limit: str | None = None) -> None:
        """Close gracefully (queued output is flushed first); ``limit`` names a limit hit."""
        if limit is not None and self.transport.is_open:
            self.transport.limit_hit = limit
        self.transport.close(reason)

    @property
    def connected(self) -> bool:
        return self.transport.is_open

    @property
    def peer(self) -> tuple[str, int]:
        return self.transport.peer

    @property
    def output_bytes(self) -> int:
        return self.transport.output_bytes
