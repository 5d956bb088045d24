"""What every protocol is: bytes in -> requests, events out -> bytes, per connection.

A protocol object sits between one transport (the socket's
:class:`~chatd.transport.connection.Connection`) and one session (the chat domain's
:class:`~chatd.chat.client.Client`), and knows neither's insides: it is handed
both as objects with the small interfaces below, so it can be tested with
bytes and fakes alone (the h11 habit).

Input: the transport calls :meth:`ChatProtocol.data_received` with whatever
``recv`` returned.  The protocol frames it into lines, turns the lines into
requests (:mod:`chatd.requests`) with :meth:`ChatProtocol.parse`, and hands
them to the session in one call per read.  Framing is the protocol's choice,
made per class (no cost per connection):

* its framer: :meth:`ChatProtocol.make_framer` (a :class:`~chatd.framing.LineFramer`
  by default: ``\\n`` or ``\\r\\n``, the over-long line discarded, never buffered);
* its input limits: :meth:`ChatProtocol.input_limits`, from the server's
  (``limits.max_line_bytes``, ``limits.recvq_max_bytes``) and the listener's options
  (IRC's 512 bytes plus tags is a protocol's own limit, not the server's);
* its input sanitising: :attr:`ChatProtocol.decode`, what a framed line's bytes
  become (the line protocol: text for people, sanitised, erases applied; jsonl: strict
  UTF-8, nothing removed, its values checked after parsing; a protocol that needs raw
  lines, IRC's ``\\x01ACTION`` and formatting codes, decodes without sanitising and
  answers for what it passes on).

Refusals are the protocol's words too: whatever the acceptor or the transport
tells a peer before closing (the server is full, another protocol's greeting, an
endless line) is made by :meth:`ChatProtocol.refusal` from the listener's
protocol class, so a jsonl peer gets an ``error`` object it can parse, not a line
meant for ``nc``.

Sessions: a connection is nobody until its protocol says otherwise.  The
transport stack calls :meth:`ChatProtocol.connection_made` once it is ready (after
the PROXY header, where the listener reads one, and the TLS handshake, where it
speaks TLS); from then on the protocol decides when the chat session begins, and
asks for it with :meth:`ChatProtocol.begin_session` (a
:class:`~chatd.requests.SessionRequest`: the nick wished for, the user name, the
real name, the account, the listener password), which goes through the
connection's :class:`Door` (its listener's, handed in by the acceptor) to the
composition root and the chat domain.  Until then the connection is in no
presence, has no nick, is never welcomed or announced, and no hook hears of it;
it is still held to admission (an unregistered connection), the registration
timeout and every input limit.  A protocol may never begin one (an HTTP request
on a WebSocket listener that is not an upgrade).

The base class's rule, which ``line`` and ``jsonl`` use: the session begins at the
first line that is not another protocol's greeting, or once the connection has
sent nothing for ``limits.greeting_delay_seconds`` (bytes without a line end wait
for their line: a greeting may come in pieces) (so ``nc`` shows the welcome at
once for practical purposes, and an HTTP request, a TLS hello or binary junk is
refused before anyone is made of it).  Where the listener has a password
(``listen[].password``), the session begins only once it is given:
:meth:`ChatProtocol.password_in` says where a protocol reads it (the line
protocol: the first line typed, after a prompt; jsonl: a first request
``{"cmd": "pass", "password": ...}``), the door checks it (constant time, wrong
ones limited per address).  IRC will make its own rule (``CAP``, ``NICK``,
``USER``, ``PASS``, SASL), overriding these methods.

Rooms: :attr:`ChatProtocol.keeps_a_room` says whether a client of the protocol
always has a current room (the line protocol: a person typing at ``nc`` always
talks somewhere, so the last room cannot be left); the chat domain itself lets a
client be in none (jsonl, IRC's ``PART`` and ``JOIN 0``).
:attr:`ChatProtocol.has_current_room` says whether the protocol has a current
room at all (IRC has none: every message names its room).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..config import LimitsConfig, ListenConfig
from ..config_rules import Invalid, setting
from ..events import Event
from ..framing import (
    FOREIGN_PROTOCOL_TEXTS,
    LineFramer,
    LineTooLong,
    decode_line,
    sniff_foreign_protocol,
)
from ..requests import Request, SessionRequest

# -- the neighbours' interfaces ---------------------------------------------------------------


class Transport(Protocol):
    """What a protocol writes to: the connection (see :mod:`chatd.transport.connection`)."""

    peer: tuple[str, int]
    output_bytes: int

    @property
    def is_open(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def write_now(self, data: bytes) -> None: ...

    def close(self, reason: str, *, limit: str | None = None) -> None:
        """Close gracefully; ``limit`` names the limit the connection hit, if any."""

    def reject_foreign(self, kind: str, reply: bytes) -> None:
        """Send ``reply`` (the protocol's refusal) and close: the peer speaks ``kind``."""

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

    def renderer_changed(self, old: Renderer) -> None:
        """The protocol's renderer is another object now (IRC's ``CAP REQ``: one renderer
        per capability set): the rooms' count of members per renderer follows, so the
        fan-out renders for the new one."""
        ...


class SessionRefused(Exception):
    """The door would not begin a session: ``text`` for the peer (in the protocol's
    words, with the stable ``code``), and whether the connection is closed for it."""

    def __init__(self, code: str, text: str, *, close: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.close = close


class Door(Protocol):
    """What a protocol knows of the listener that accepted its connection, and its way
    in to a chat session (the acceptor's :class:`chatd.listeners.ListenerDoor`; one
    object per listener, shared by its connections, replaced on a reload so that an
    existing connection keeps the limits it was accepted under)."""

    #: The listener's settings (None: a protocol made with no listener, in a test).
    config: ListenConfig | None
    #: The input limits of the listener's connections (:meth:`ChatProtocol.input_limits`).
    limits: ProtocolLimits

    @property
    def password_required(self) -> bool:
        """Whether a session begins only with the listener's password."""
        ...

    @property
    def greeting_delay(self) -> float:
        """``limits.greeting_delay_seconds``: how long a quiet connection waits before
        the base class's rule begins its session."""
        ...

    @property
    def server_limits(self) -> LimitsConfig:
        """The server's ``limits`` (a protocol that tells its clients what they are, as
        IRC's ``ISUPPORT`` does, or runs a registration timeout of its own)."""
        ...

    def begin(self, protocol: ChatProtocol, request: SessionRequest) -> Session | None:
        """Begin ``protocol``'s chat session; raises :class:`SessionRefused` (a wrong
        password, too many of them from the address).  None: the chat domain refused it
        and told the protocol already (:meth:`ChatProtocol.session_refused`)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        """Run ``callback`` on the loop in ``delay`` seconds (a protocol's own timers)."""
        ...

    def check_account(self, protocol: ChatProtocol, account: str, password: str,
                      then: Callable[[str | None, str | None], Any]) -> None:
        """Is ``password`` that of the registered nick ``account``?  For a protocol that
        authenticates before its session (IRC's SASL; ``Server.check_account_password``,
        held to ``/identify``'s limits on failures): ``then(name, None)`` or
        ``then(None, code)``, on the loop, at once or later; never once the connection
        is gone.  The session then begins as ``SessionRequest(account=name)``."""
        ...


class PlainDoor:
    """The door of a protocol made by hand, with no listener (tests that set
    ``protocol.session`` themselves): its limits, and no way in to a session."""

    __slots__ = ("config", "limits")

    password_required = False
    greeting_delay = 0.0
    server_limits = LimitsConfig()

    def __init__(self, limits: ProtocolLimits | None = None,
                 config: ListenConfig | None = None) -> None:
        self.limits = limits if limits is not None else ProtocolLimits()
        self.config = config

    def begin(self, protocol: ChatProtocol, request: SessionRequest) -> Session:
        raise SessionRefused("no_session", "this connection cannot begin a chat session",
                             close=True)

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        raise RuntimeError("a PlainDoor has no loop: set the protocol's session by hand")

    def check_account(self, protocol: ChatProtocol, account: str, password: str,
                      then: Callable[[str | None, str | None], Any]) -> None:
        then(None, "unavailable")  # no server: no accounts


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
    #: Whether the clients of this renderer are sent their own room messages and
    #: actions back (IRC's ``echo-message``; its renderer is one per capability set).
    #: The domain hands the sender its copy only then: one check per message, on
    #: the sender, never one per recipient in the fan-out.
    echoes_own: bool = False
    #: Whether the clients of this renderer are told when a member of their rooms goes
    #: away or comes back (IRC's ``away-notify``); the others are never sent ``Away``.
    shows_away: bool = False
    #: Whether the inviter is sent its own ``Invite`` (IRC's ``341``); and the room's
    #: members too (``notifies_invites``: IRC's ``invite-notify``).  The invitee is
    #: sent it by every protocol: each renders it (a line's notice, jsonl's object).
    shows_invites: bool = False
    notifies_invites: bool = False
    #: Whether the clients of this renderer are shown a room's recent lines when they
    #: join it (the *history* plugin reads ``client.replays_history``); False: they ask
    #: for history themselves (IRC's ``draft/chathistory``).
    replays_history: bool = True

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

    def local_error(self, text: str, *, code: str | None = None) -> bytes:
        """An error that is no chat event: a refusal before the connection is a client
        (server full, another protocol's greeting) or the protocol's own (an endless
        line).  ``code`` is its stable name (``server_full``, ``foreign_http``...; the
        list is in docs/protocols.md) for protocols whose clients are programs."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """The input limits of one connection, fixed when it is accepted (one object per
    listener, shared by its connections: :meth:`ChatProtocol.input_limits`)."""

    max_line_bytes: int = 4096
    #: Most bytes of one over-long line discarded before the client is cut.
    recvq_max: int = 65536


class Framer(Protocol):
    """What :meth:`ChatProtocol.make_framer` returns: bytes in, framed lines out
    (:class:`~chatd.framing.LineFramer` is the one line-based protocols use)."""

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line (for the partial-line timeout)."""
        ...

    #: Bytes of the current over-long line dropped so far (cut past ``recvq_max``).
    discarded: int

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]: ...

    def finish(self) -> Any:
        """End of stream: the unterminated last line, or None."""
        ...


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    """The listener options of chatd's built-in protocols (``line``, ``jsonl``), beside
    the core's keys: a protocol registers the options dataclass it reads (see
    :mod:`chatd.protocols.registry`); one for people or bots may subclass this one."""

    history_replay: bool = setting(
        True,
        "Show a room's recent lines (the history plugin) when a client of this listener "
        "joins it, the room it is put in at connect included. false: a listener for bots "
        "that must never take old lines for new ones (they start with /set history off, "
        "before the first join; /history still shows lines on request).",
    )
    password: str | None = setting(
        None,
        "A password a client of this listener must give before it is a user (no nick, "
        "no welcome, in no room until then): the line protocol asks for it when a client "
        "connects and takes the first line typed; jsonl takes it as the first request, "
        "{\"cmd\": \"pass\", \"password\": \"...\"}. Keep it out of the file with "
        "${NAME} (an environment variable) or password_file. Compared in constant time and "
        "never logged; wrong ones are limited per address (docs/operations.md). Read at "
        "start. null: no password.",
        pattern=r"[^\x00-\x1f\x7f]{1,512}",
        describe="1 to 512 characters, no control characters",
    )
    password_file: str | None = setting(
        None,
        "A file whose first line is the listener's password (instead of password, which "
        "must then be null): readable by chatd's user alone, say. Read at start.",
        path=True,
    )

    def __post_init__(self) -> None:
        """The two ways to give a password exclude each other, and a password file must
        be readable and hold one (checked with the config: ``--check-config`` says so)."""
        if self.password_file is None:
            return
        if self.password is not None:
            raise Invalid("password and password_file are both set: keep one",
                          key="password_file")
        read_password_file(self.password_file)


def read_password_file(path: str) -> str:
    """The password in the file ``path``: its first line, without the line ending;
    raises :class:`~chatd.config_rules.Invalid` if it cannot be read or holds none."""
    try:
        with open(path, encoding="utf-8") as file:
            first = file.readline(1024).rstrip("\r\n")
    except OSError as exc:
        raise Invalid(f"cannot read {path}: {exc.strerror or exc}", key="password_file") \
            from None
    except UnicodeDecodeError:
        raise Invalid(f"{path} is not UTF-8 text", key="password_file") from None
    if not first or any(ord(c) < 32 or ord(c) == 127 for c in first):
        raise Invalid(f"{path}: its first line must be the password (1 to 512 characters, "
                      "no control characters)", key="password_file")
    return first


def listener_password(options: Mapping[str, Any]) -> str | None:
    """The password of a listener whose (checked) options are ``options``: ``password``,
    or the first line of ``password_file``; None if it has neither (or the protocol has
    no such options).  Raises :class:`~chatd.config_rules.Invalid` for a file that
    cannot be read any more."""
    password = options.get("password")
    if password is not None:
        return str(password)
    path = options.get("password_file")
    return read_password_file(str(Path(path))) if path is not None else None


# -- the base class of line-based protocols -------------------------------------------------------

#: How many first bytes of a connection are read for another protocol's greeting.
_SNIFFED = 512

#: The session request of a protocol that learned nothing before it (line, jsonl).
_NO_REQUEST = SessionRequest()


class ChatProtocol:
    """One connection's protocol.  Subclasses set :attr:`renderer` and :meth:`parse`.

    Attributes the chat domain and the housekeeping sweep read:

    ``session``
        The chat session (the domain's client) once it began, else None: the
        connection is nobody yet (see the module docstring, "Sessions").
    ``registered``
        The client has sent at least one line in its session (see
        ``limits.registration_timeout``); a listener password is not one.
    ``opened_at`` / ``last_input``
        Monotonic times of the connection and of its last complete line (the same
        value until the first line: "no line yet", read before the session begins).
    ``partial_since``
        Since when an unfinished line has been waiting, or None.
    """

    renderer: ClassVar[Renderer]
    #: The protocol's name (``listen[].protocol``, ``client.protocol``) where it renders
    #: with another protocol's renderer (``websocket`` sends jsonl's bytes in frames, so a
    #: room of both renders each event once); None: its renderer's name.
    wire_name: ClassVar[str | None] = None
    #: How a framed line's bytes become a line (:class:`~chatd.framing.LineFramer`'s
    #: ``decode``): the protocol's input sanitising.  Text for people by default
    #: (:func:`~chatd.framing.decode_line`); jsonl decodes strictly instead.
    decode = staticmethod(decode_line)

    #: The tag of the request being handled, echoed in the reply by protocols whose
    #: requests can carry one (a slot of theirs: jsonl's ``id``, set by
    #: :meth:`replying_to`); None for the others.
    reply_tag: str | None = None

    #: How the connection ends after a goodbye the peer did not ask to end with its own
    #: FIN (``/quit``, a shutdown, a limit): False, a FIN after the last byte (programs
    #: read to end of file); True, a reset once the peer's TCP acknowledged the last
    #: byte (``nc`` and ``ncat`` return to the shell only on a reset: see
    #: :mod:`chatd.transport.connection`).  The listener gives its connections this ending.
    reset_after_goodbye: ClassVar[bool] = False

    #: Whether a client of this protocol always has a current room: True keeps it from
    #: leaving its last one (the *rooms* plugin's ``/part`` refuses; plugins read it as
    #: ``client.keeps_a_room``).  The chat domain lets a client be in no room; this is
    #: the protocol's choice (a person at ``nc`` always talks somewhere).
    keeps_a_room: ClassVar[bool] = False
    #: Whether a client of the protocol is shown who is in a room on EVERY join, also
    #: the one the server makes at connect (IRC: a channel's nick list is built from
    #: the 353/366 of its join); False: only a ``/join`` greets (the line protocol's
    #: welcome says where a person is, and its README transcript shows no list).
    names_every_join: ClassVar[bool] = False
    #: Whether the protocol has a *current room* at all: a line without a room goes
    #: to it (line, jsonl), so "you are now talking in #x" tells the client something.
    #: False: every message names its target (IRC's ``PRIVMSG #room``), and those
    #: notices are not sent (plugins read it as ``client.has_current_room``).
    has_current_room: ClassVar[bool] = True
    #: Whether a client of the protocol is told the server's counts (users, operators,
    #: rooms: the *presence* plugin's ``/lusers``) when its session begins: IRC's
    #: LUSERS block after registration, which clients expect; plugins read it as
    #: ``client.counts_at_start``.
    counts_at_start: ClassVar[bool] = False

    __slots__ = (
        "_door",
        "_framer",
        "last_input",
        "opened_at",
        "partial_since",
        "registered",
        "session",
        "transport",
    )

    def __init__(self, transport: Transport, door: Door | ProtocolLimits | None = None) -> None:
        self.transport = transport
        #: The listener's door (settings, limits, the way in to a session): one object
        #: per listener, shared by its connections (one slot each, not three).  A
        #: protocol made by hand (a test, a tool) may pass its input limits instead, or
        #: nothing: it then sets :attr:`session` itself.
        if door is None or door.__class__ is ProtocolLimits:
            door = PlainDoor(door)  # type: ignore[arg-type]
        self._door: Door = door  # type: ignore[assignment]
        self.session: Session | None = None
        #: Made on the first chunk received (so ``None`` also says "nothing came
        #: yet"): a connection that only listens (most of them) needs no line buffer.
        self._framer: Framer | None = None
        now = time.monotonic()
        self.opened_at = now
        self.last_input = now
        self.partial_since: float | None = None
        self.registered = False

    @property
    def listener(self) -> ListenConfig | None:
        """The settings of the listener that accepted the connection (None: made by a
        test without one); the chat domain shows it to plugins as ``client.listener``."""
        return self._door.config

    @property
    def name(self) -> str:
        return self.wire_name or self.renderer.name

    # -- the protocol's choices, per class ---------------------------------------------

    @classmethod
    def input_limits(cls, server: ProtocolLimits, options: Mapping[str, Any]) -> ProtocolLimits:
        """The input limits of this protocol's connections on a listener whose (checked)
        options are ``options``; ``server`` holds the server's (``limits.max_line_bytes``,
        ``limits.recvq_max_bytes``).  Asked once per listener and on every reload,
        never per connection.  Line and jsonl keep the server's; a protocol with a
        line limit of its own (IRC: 512 bytes plus tags) returns its own."""
        return server

    def make_framer(self) -> Framer:
        """The framer of this connection, made on its first bytes (a connection that
        only listens never needs one): lines up to :attr:`ProtocolLimits.max_line_bytes`,
        each turned into what :attr:`decode` makes of it."""
        return LineFramer(self._door.limits.max_line_bytes, self.decode)

    @classmethod
    def refusal(cls, code: str, text: str) -> bytes:
        """What a peer of this protocol is told before it is closed, in its own format:
        the acceptor's refusals (``server_full``, ``per_ip``...), the answer to another
        protocol's greeting (``foreign_http``...).  Made from the class, so it serves
        connections that never get a protocol object (refused at the door)."""
        return cls.renderer.local_error(text, code=code)

    # -- from the transport ------------------------------------------------------------

    def data_received(self, data: memoryview) -> None:
        """Bytes from the socket: frame, parse, hand the requests to the session."""
        framer = self._framer
        if framer is None:  # the first chunk: another protocol's greeting?
            kind = sniff_foreign_protocol(data)
            if kind is not None:
                self._reject_foreign(kind)
                return
            framer = self._framer = self.make_framer()
        elif self.last_input == self.opened_at and framer.__class__ is LineFramer \
                and 0 < framer.buffered < _SNIFFED:
            # No line yet, only its first bytes: with these, the greeting of another
            # protocol that came in pieces (a TLS hello's first segment of one byte, an
            # HTTP request line typed slowly) shows now; nobody was made of it meanwhile
            # (_greeting_over waits for the first line once bytes came).
            kind = sniff_foreign_protocol(framer.head + bytes(data[:_SNIFFED]))  # type: ignore[attr-defined]
            if kind is not None:
                self._reject_foreign(kind)
                return
        lines = framer.feed(data)
        if framer.discarded > self._door.limits.recvq_max:
            self.tell("input line far too long (excess flood); disconnecting",
                      code="excess_flood")
            self.transport.close("excess flood: input line too long", limit="qbuf")
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
            if self.session is None:
                lines = self._before_session(lines)
                if not lines or self.session is None or not self.transport.is_open:
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
            self._reject_foreign("http")
            return False
        return True

    def _reject_foreign(self, kind: str) -> None:
        """The peer speaks ``kind`` (HTTP, TLS, binary junk): say so in this protocol's
        words and let the transport close."""
        self.transport.reject_foreign(
            kind, self.refusal(f"foreign_{kind}", FOREIGN_PROTOCOL_TEXTS[kind]))

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

    # -- the session ----------------------------------------------------------------------

    def connection_made(self) -> None:
        """The transport stack is ready: called once, by the transport, after the PROXY
        header (where the listener reads one) and the TLS handshake (where it speaks
        TLS), before any byte is handed on.

        The base class's rule (``line``, ``jsonl``): the session begins at the first
        line, or after ``limits.greeting_delay_seconds`` of quiet (at once when 0); with
        a listener password, the password is asked for then instead.  A protocol with a
        handshake of its own overrides this and :meth:`_before_session`.
        """
        delay = self._door.greeting_delay
        if delay > 0:
            self._door.call_later(delay, self._greeting_over)
        else:
            self._greeting_over()

    def _greeting_over(self) -> None:
        """The greeting delay passed with no line: begin the session (or ask for the
        password, if nothing at all came meanwhile).  No timer to cancel when a line
        came first: the session then exists, and this does nothing."""
        if self.session is not None or not self.transport.is_open:
            return
        if self._framer is not None and self.last_input == self.opened_at:
            return  # bytes came but no line yet: the first line decides (it may be HTTP)
        if self._door.password_required:
            if self._framer is None:
                self.ask_password()
            return
        self.begin_session()

    def begin_session(self, request: SessionRequest | None = None) -> bool:
        """Ask for this connection's chat session to begin, with what the protocol
        learned (``request``); True once it has.  A refusal (a wrong password) is told
        to the peer in this protocol's words, and closes the connection where the door
        says so; False then."""
        if self.session is not None:
            return True
        if not self.transport.is_open:
            return False
        try:
            session = self._door.begin(self, request if request is not None else _NO_REQUEST)
        except SessionRefused as refused:
            self.tell(refused.text, code=refused.code)
            if refused.close:
                self.transport.close(refused.text, limit=refused.code)
            return False
        if session is None:  # refused by the chat domain: session_refused told why
            return False
        self.session = session
        return True

    def session_started(self, session: Session) -> None:
        """The chat domain begins this connection's session (its nick is had), just before
        ``chatd_client_connect``: anything the protocol must say first goes now (IRC's
        ``001``-``005`` and MOTD come before the welcome notice and the first join).
        ``session`` is the one :meth:`begin_session` returns (or already returned: a
        nick's claim may be answered later).  The base class says nothing."""

    def session_refused(self, code: str, text: str) -> None:
        """The chat domain will not begin the session asked for with
        ``SessionRequest(nick_required=True)``: the nick is invalid (``erroneous_nick``),
        refused by a plugin (``nick_refused``, or the plugin's code) or taken
        (``nick_in_use``).  Called during :meth:`begin_session` or later (a claim answered
        later); nobody was made of the connection, no hook heard of it, and it stays
        open: a protocol with a handshake of its own (IRC: ``433``, then another
        ``NICK``) asks again.  The base class tells the peer and closes."""
        self.session = None
        self.tell(text, code=code)
        self.transport.close(text, limit=code)

    def _before_session(self, lines: list[str | LineTooLong]) -> list[str | LineTooLong]:
        """Lines received before the session began: the first begins it (and is the
        session's first line), or, where the listener has a password, the lines are
        password attempts until one is right.  Returns the lines left for the session."""
        if not self._door.password_required:
            return lines if self.begin_session() else []
        for index, line in enumerate(lines):
            given = self.password_in(line)
            if given is None:
                continue
            if self.begin_session(SessionRequest(password=given)):
                return lines[index + 1:]
            if not self.transport.is_open:
                break
        return []

    def password_in(self, line: str | LineTooLong) -> str | None:
        """The listener password a line received before the session gives, or None if it
        gives none (told to the peer, where it needs telling).  The base class: the
        whole line (the line protocol's rule); a blank line is no attempt."""
        if line.__class__ is LineTooLong:
            self.tell("line too long", code="line_too_long")
            return None
        text = str(line)
        return text if text.strip() else None

    def ask_password(self) -> None:
        """Tell the peer that this listener wants its password (the line protocol's
        prompt); called once, when the greeting delay passes with nothing received.
        The base class says nothing (a program knows, from the docs)."""

    def goodbye(self, reason: str) -> bytes:
        """What the connection is sent last when the server closes it on its own (a
        shutdown), after everything queued; ``b""``: nothing (line and jsonl were sent
        the server's notice already).  IRC: ``ERROR :Closing link: reason``."""
        return b""

    def tell(self, text: str, *, code: str | None = None) -> None:
        """An error for the peer that is no chat event (before a session, or about the
        connection itself), in this protocol's words (:meth:`Renderer.local_error`)."""
        self.transport.write(self.renderer.local_error(text, code=code))

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

    def answer(self, payload: bytes) -> None:
        """Write an :class:`~chatd.requests.Answer` of this protocol's: the chat domain
        calls it when it reaches the answer among the client's requests, so it follows
        the replies to the requests before it."""
        if self.transport.is_open:
            self.transport.write(payload)

    def replying_to(self, tag: str | None) -> None:
        """What is delivered from now on answers the request tagged ``tag`` (None: no
        request any more).  The chat domain calls it around a tagged request; only
        protocols whose requests carry a tag (jsonl's ``id``) keep it, the others
        have none to echo and ignore it."""

    def replying_later(self, tag: str) -> None:
        """The request tagged ``tag`` will be answered again later (a presence question
        went out: its answer comes in a bracket of :meth:`replying_to` of its own).  A
        protocol that must know when a request's whole answer is in (IRC's
        labeled-response) counts these; the others ignore it."""

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
        self.transport.close(reason, limit=limit)

    @property
    def connected(self) -> bool:
        return self.transport.is_open

    @property
    def peer(self) -> tuple[str, int]:
        return self.transport.peer

    @property
    def output_bytes(self) -> int:
        return self.transport.output_bytes
